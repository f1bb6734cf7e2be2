#!/usr/bin/env python3
"""`make bench-sweep`: what `tessera sweep` adds to a trial, against bare sbatch.

  sweep_overhead.py --tessera BIN [--trials N] [--poll-seconds S] [--out-svg PATH]
                    [--cluster-running] [--keep]

Measures, in one run, on the test Slurm cluster (tests/slurm/cluster.sh, started and
stopped here in its own directory and port unless --cluster-running says one is up) and
on the local backend:

 1. bare sbatch: N trivial batch jobs (the script's first action writes `date +%s.%N`),
    each submitted with `sbatch --parsable` a random 0-1 s after the one before has
    finished (so that submissions fall at random moments against the scheduler's ticks,
    as a sweeper's do); latency = script start - the time just before sbatch was called.
    Split with slurmctld's log into: before sbatch -> slurmctld starts the job (waiting
    for a scheduler pass) and job start -> script start (the launch through slurmd).
 2. the sweeper, submission to running: a sweep of N trials of bench/sweep_objective.py
    (a synthetic trial that records its start, and ends a random 0-1 s after its
    metrics for the same reason), max_concurrent 1, on the local backend and on Slurm
    through the C API and through the command-line tools; latency = the trial command's
    start - the journal's trial_submitting time. Also the submission call itself
    (trial_submitting -> trial_submitted), how long the sweeper takes to see a trial end
    (command exit -> trial_end) and to submit the next one.
 3. decision latency: an ASHA sweep (min_resource 4, reduction_factor 2, 16 steps) whose
    trials write one metric line every 0.1 s on average, each with its time; latency =
    the journal's rung event - the time of the run-log line at the rung's step. For the
    trials ASHA stops: trial_stopping -> the trial command's exit (it records it) and
    -> trial_end.

All clocks are this machine's. The journal's times have millisecond resolution; the
trial's own times are exact. Standard library only. Prints a table of medians and
maxima in milliseconds; --out-svg draws it.
"""
import argparse
import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "tuning"))
from sweep_runs import read_jsonl  # noqa: E402  (the complete lines of a JSONL file)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, ".."))
OBJECTIVE = os.path.join(HERE, "sweep_objective.py")
PYTHON = "/usr/bin/python3"
CLUSTER = os.path.join(SOURCE, "tests", "slurm", "cluster.sh")

ASHA_STEPS, ASHA_MIN_RESOURCE, ASHA_FACTOR, ASHA_STEP_SECONDS = 16, 4, 2, 0.1
LATENCY_STEPS = 3


def fail(message):
    print("sweep_overhead: " + message, file=sys.stderr)
    sys.exit(1)


def journal_time(text):
    """'2026-01-02T03:04:05.678Z' (the journal's and the run log's) as seconds since the epoch."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


# ---- the test cluster ----------------------------------------------------------------

class Cluster:
    """The test Slurm cluster: started (and stopped at the end) unless one is running."""

    def __init__(self, running):
        self.started_here = False
        self.available = False
        self.why = ""
        self.log = os.path.join(os.environ["TESSERA_SLURM_DIR"], "log", "slurmctld.log")
        status = subprocess.run(["bash", CLUSTER, "status"], capture_output=True, text=True)
        if status.returncode != 0:
            if running:
                fail("--cluster-running, but no test cluster runs in %s:\n%s" % (os.environ["TESSERA_SLURM_DIR"], status.stdout))
            start = subprocess.run(["bash", CLUSTER, "start"], capture_output=True, text=True)
            if start.returncode == 77:
                self.why = (start.stdout + start.stderr).strip()
                return
            if start.returncode != 0:
                fail("the test cluster did not start:\n" + start.stdout + start.stderr)
            self.started_here = True
        env_line = subprocess.run(["bash", CLUSTER, "env"], capture_output=True, text=True).stdout
        os.environ["SLURM_CONF"] = env_line.strip().split("=", 1)[1]
        self.available = True

    def stop(self):
        if self.started_here:
            subprocess.run(["bash", CLUSTER, "stop"], capture_output=True, text=True)
            self.started_here = False

    def start_times(self):
        """Job id -> when slurmctld started it (its log, local time, ms) and by which scheduler."""
        out = {}
        if not os.path.exists(self.log):
            return out
        pattern = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})\] (sched/backfill: _start_job: Started|sched: Allocate) JobId=(\d+)")
        with open(self.log, errors="replace") as f:
            for line in f:
                m = pattern.match(line)
                if m:
                    t = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + int(m.group(2)) / 1000.0
                    out[m.group(4)] = (t, "backfill" if "backfill" in m.group(3) else "main")
        return out


# ---- 1. bare sbatch ------------------------------------------------------------------

def job_state(job_id):
    p = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    m = re.search(r"\bJobState=(\S+)", p.stdout)
    return m.group(1) if m else ""


def bare_sbatch(work, trials, cluster):
    script = os.path.join(work, "bare.sh")
    with open(script, "w") as f:
        f.write("#!/bin/bash\ndate +%s.%N > \"$1\"\n")
    os.chmod(script, 0o755)
    rows = []
    rng = random.Random(1)
    for i in range(trials):
        stamp = os.path.join(work, "bare-%d.start" % i)
        time.sleep(rng.uniform(0, 1))  # a random moment against the scheduler's ticks
        before = time.time()
        p = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--chdir=" + work, script, stamp],
                           capture_output=True, text=True)
        returned = time.time()
        if p.returncode != 0:
            fail("sbatch failed: " + p.stdout + p.stderr)
        job_id = p.stdout.strip().split(";")[0]
        deadline = time.time() + 60
        while job_state(job_id) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            if time.time() > deadline:
                fail("bare job %s did not finish within 60 s" % job_id)
            time.sleep(0.05)
        with open(stamp) as f:
            start = float(f.read().strip())
        rows.append({"job_id": job_id, "before": before, "call": returned - before, "start": start})
    started = cluster.start_times()
    out = {"latency": [r["start"] - r["before"] for r in rows], "call": [r["call"] for r in rows],
           "by": [started.get(r["job_id"], (0, "?"))[1] for r in rows]}
    if all(r["job_id"] in started for r in rows):
        out["to_slurm_start"] = [started[r["job_id"]][0] - r["before"] for r in rows]
        out["slurm_start_to_script"] = [r["start"] - started[r["job_id"]][0] for r in rows]
    return out


# ---- 2. and 3. sweeps ----------------------------------------------------------------

def backend_lines(backend):
    if backend == "local":
        return "backend: local\n"
    return "backend: slurm\nslurm: {interface: %s}\n" % backend.split("-")[1]


def write_sweep(work, name, backend, trials, poll, asha):
    command = [PYTHON, OBJECTIVE] + (["--step-seconds", str(ASHA_STEP_SECONDS)] if asha else ["--exit-jitter", "1"])
    steps = ASHA_STEPS if asha else LATENCY_STEPS
    text = ("recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
            "set: [train.steps=%d, optim.warmup_steps=0, optim.min_lr=0]\n" % steps +
            "space:\n  optim.lr: {loguniform: [1.0e-5, 1.0e-1]}\n  optim.weight_decay: {uniform: [0.0, 0.2]}\n"
            "objective: {metric: val_loss, mode: min}\n"
            "sampler: {kind: random, seed: 3}\n" +
            ("scheduler: {kind: asha, min_resource: %d, reduction_factor: %d}\n" % (ASHA_MIN_RESOURCE, ASHA_FACTOR)
             if asha else "") +
            "max_trials: %d\nmax_concurrent: 1\npoll_seconds: %g\n" % (trials, poll) +
            "trial: {command: [%s], time_limit_minutes: 10}\n" % ", ".join(command) +
            backend_lines(backend) + "dir: sweeps/%s\n" % name)
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_sweep(tessera, work, name, backend, trials, poll, asha):
    sweep = write_sweep(work, name, backend, trials, poll, asha)
    began = time.time()
    try:
        p = subprocess.run([tessera, "sweep", "run", sweep], cwd=work, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as ex:
        fail("sweep %s timed out:\n%s%s" % (name, ex.stdout, ex.stderr))
    if p.returncode != 0:
        fail("sweep %s failed (exit %d):\n%s%s" % (name, p.returncode, p.stdout, p.stderr))
    sweep_dir = os.path.join(work, "sweeps", name)
    events = read_jsonl(os.path.join(sweep_dir, "journal.jsonl"))
    for e in events:
        e["t"] = journal_time(e["time"])
    logs = {}
    for trial in sorted({e["trial"] for e in events if e["event"] == "trial_created"}):
        runs = os.path.join(sweep_dir, "trials", str(trial), "runs")
        logs[trial] = [line for r in sorted(os.listdir(runs)) for line in read_jsonl(os.path.join(runs, r, "run.jsonl"))]
    return events, logs, time.time() - began


def first(events, kind, trial):
    for e in events:
        if e["event"] == kind and e.get("trial") == trial:
            return e
    return None


def latency_sweep(tessera, work, backend, trials, poll, cluster):
    events, logs, wall = run_sweep(tessera, work, "latency-" + backend, backend, trials, poll, asha=False)
    started = cluster.start_times() if backend != "local" else {}
    out = {"latency": [], "call": [], "exit_to_end": [], "end_to_next": [], "to_slurm_start": [],
           "slurm_start_to_script": [], "wall": wall}
    for trial, log in logs.items():
        submitting, submitted = first(events, "trial_submitting", trial), first(events, "trial_submitted", trial)
        end = first(events, "trial_end", trial)
        start = next(e for e in log if e["event"] == "run_start")
        finish = next(e for e in log if e["event"] == "run_end")
        out["latency"].append(start["t"] - submitting["t"])
        out["call"].append(submitted["t"] - submitting["t"])
        out["exit_to_end"].append(end["t"] - finish["t"])
        following = first(events, "trial_submitting", trial + 1)
        if following:
            out["end_to_next"].append(following["t"] - end["t"])
        if submitted["job_id"] in started:
            out["to_slurm_start"].append(started[submitted["job_id"]][0] - submitting["t"])
            out["slurm_start_to_script"].append(start["t"] - started[submitted["job_id"]][0])
    return out


def asha_sweep(tessera, work, backend, trials, poll):
    events, logs, wall = run_sweep(tessera, work, "asha-" + backend, backend, trials, poll, asha=True)
    out = {"rung": [], "stop_to_exit": [], "stop_to_end": [], "wall": wall, "rungs": 0, "pruned": 0}
    for e in events:
        if e["event"] == "rung":
            line = next(x for x in logs[e["trial"]] if x.get("step") == e["step"] and "val_loss" in x and "t" in x)
            out["rung"].append(e["t"] - line["t"])
        elif e["event"] == "trial_stopping":
            exits = [x for x in logs[e["trial"]] if x["event"] == "run_end"]
            end = first(events, "trial_end", e["trial"])
            if exits:
                out["stop_to_exit"].append(exits[-1]["t"] - e["t"])
            out["stop_to_end"].append(end["t"] - e["t"])
    out["rungs"] = len(out["rung"])
    out["pruned"] = sum(1 for e in events if e["event"] == "trial_end" and e["state"] == "pruned")
    return out


def process_start(command, trials):
    """Exec to first action of a program, from just before Popen: what each trial's start includes."""
    values = []
    for _ in range(trials):
        before = time.time()
        p = subprocess.run(command, capture_output=True, text=True)
        values.append(float(p.stdout.strip()) - before)
    return values


# ---- the table -----------------------------------------------------------------------

def ms(values):
    return (1000 * statistics.median(values), 1000 * max(values)) if values else (None, None)


def svg(rows, path, title):
    bars = [r for r in rows if r[3] is not None]
    scale_max = max(r[4] for r in bars) or 1.0
    width, left, row_h, top = 980, 470, 18, 40
    height = top + row_h * len(bars) + 40
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="20" font-size="13">%s</text>' % title]
    plot = width - left - 90
    for i, (what, backend, n, median, maximum) in enumerate(bars):
        y = top + i * row_h
        indent = 14 if what.startswith(" ") else 0
        out.append('<text x="%d" y="%d">%s — %s</text>' % (10 + indent, y + 12, what.strip().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), backend))
        out.append('<rect x="%d" y="%d" width="%.1f" height="12" fill="#4a7ab5"/>' % (left, y + 2, max(1.0, plot * median / scale_max)))
        xm = left + plot * maximum / scale_max
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c0392b" stroke-width="2"/>' % (xm, y + 1, xm, y + 15))
        out.append('<text x="%.1f" y="%d" fill="#333">%.0f / %.0f</text>' % (max(xm, left + plot * median / scale_max) + 5, y + 12, median, maximum))
    y = top + row_h * len(bars) + 20
    out.append('<text x="10" y="%d">bar: median ms; red tick: max ms (label: median / max)</text>' % y)
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--poll-seconds", type=float, default=0.2)
    ap.add_argument("--out-svg")
    ap.add_argument("--cluster-running", action="store_true",
                    help="use the test cluster running in $TESSERA_SLURM_DIR; do not start or stop one")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (sweeps, journals, run logs)")
    opt = ap.parse_args()
    tessera = os.path.abspath(opt.tessera)
    if not os.access(tessera, os.X_OK):
        fail("no tessera binary at " + tessera)
    # A cluster of its own, away from the test suite's (/tmp/tessera-slurm, ports 6817-6818).
    os.environ.setdefault("TESSERA_SLURM_DIR", "/tmp/tessera-slurm-bench")
    os.environ.setdefault("TESSERA_SLURM_PORT", "23456")
    os.environ["OMP_NUM_THREADS"] = "1"
    began = time.time()
    load_before = os.getloadavg()[0]
    cluster = Cluster(opt.cluster_running)
    work = tempfile.mkdtemp(prefix="sweep_overhead_")
    n, poll = opt.trials, opt.poll_seconds
    results = {}
    try:
        if not cluster.available:
            print("no Slurm: %s; measuring the local backend only" % cluster.why)
        results["python"] = process_start([PYTHON, "-c", "import time; print(time.time())"], n)
        results["date"] = process_start(["date", "+%s.%N"], n)
        backends = ["local"] + (["slurm-api", "slurm-cli"] if cluster.available else [])
        if cluster.available:
            print("bare sbatch: %d jobs ..." % n, flush=True)
            results["bare"] = bare_sbatch(work, n, cluster)
        for b in backends:
            print("sweep, %s: %d trials ..." % (b, n), flush=True)
            results["latency", b] = latency_sweep(tessera, work, b, n, poll, cluster)
        for b in backends:
            print("ASHA sweep, %s: %d trials ..." % (b, n), flush=True)
            results["asha", b] = asha_sweep(tessera, work, b, n, poll)
        starts = cluster.start_times() if cluster.available else {}
        load = os.getloadavg()
    finally:
        cluster.stop()
        if not opt.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = []  # (what, backend, n, median ms, max ms)

    def add(what, backend, values):
        rows.append((what, backend, len(values)) + ms(values))

    if "bare" in results:
        bare = results["bare"]
        add("bare sbatch: before sbatch -> script start", "slurm", bare["latency"])
        add("  the sbatch call", "slurm", bare["call"])
        if "to_slurm_start" in bare:
            add("  before sbatch -> slurmctld starts the job", "slurm", bare["to_slurm_start"])
            add("  slurmctld start -> script start (launch)", "slurm", bare["slurm_start_to_script"])
    for b in backends:
        r = results["latency", b]
        add("sweep: trial_submitting -> command start", b, r["latency"])
        add("  trial_submitting -> trial_submitted", b, r["call"])
        if r["to_slurm_start"]:
            add("  trial_submitting -> slurmctld starts the job", b, r["to_slurm_start"])
            add("  slurmctld start -> command start (launch)", b, r["slurm_start_to_script"])
        add("sweep: command exit -> trial_end", b, r["exit_to_end"])
        add("  trial_end -> next trial_submitting", b, r["end_to_next"])
    for b in backends:
        r = results["asha", b]
        add("ASHA: run-log line at rung step -> rung event", b, r["rung"])
        add("ASHA: trial_stopping -> command exit", b, r["stop_to_exit"])
        add("ASHA: trial_stopping -> trial_end", b, r["stop_to_end"])
    add("process start: python3 (in every command start)", "local", results["python"])
    add("process start: date (in the bare script start)", "local", results["date"])

    print()
    print("tessera sweep overhead: %d trials per sweep, max_concurrent 1, poll_seconds %g; %d cores" % (n, poll, os.cpu_count()))
    print("%-50s %-10s %3s %10s %10s" % ("measurement", "backend", "n", "median ms", "max ms"))
    for what, backend, count, median, maximum in rows:
        if median is None:
            print("%-50s %-10s %3d %10s %10s" % (what, backend, count, "-", "-"))
        else:
            print("%-50s %-10s %3d %10.1f %10.1f" % (what, backend, count, median, maximum))

    print()
    if cluster.available:
        ours = [v for v in starts.values() if v[0] >= began]
        tick = sorted(t % 1.0 for t, by in ours if by == "backfill")
        print("slurmctld started %d jobs in this run: %d by the backfill scheduler%s, %d by the main scheduler"
              % (len(ours), len(tick), " (at %.3f-%.3f s past the second: its bf_interval=1 tick)" % (tick[0], tick[-1])
                                        if tick else "", len(ours) - len(tick)))
    if "bare" in results:
        bare = results["bare"]
        bare_median = statistics.median(bare["latency"])
        if "to_slurm_start" in bare:
            print("what dominates submission to start: waiting for a scheduler pass (%.0f of the %.0f ms median):"
                  " slurmctld does not start a batch job when it is submitted, the next pass of the backfill"
                  " scheduler (bf_interval=1) or of the main one (sched_interval=2) does"
                  % (1000 * statistics.median(bare["to_slurm_start"]), 1000 * bare_median))
        med = lambda values: 1000 * statistics.median(values)  # noqa: E731
        for b in backends[1:]:
            r = results["latency", b]
            line = "per-trial overhead of the sweeper (%s) over bare sbatch, submission to start: %+.1f ms (median %.1f against %.1f)" % (
                b, med(r["latency"]) - med(bare["latency"]), med(r["latency"]), med(bare["latency"]))
            if r["slurm_start_to_script"] and "slurm_start_to_script" in bare:
                own = (med(r["call"]) - med(bare["call"])) + (med(r["slurm_start_to_script"]) - med(bare["slurm_start_to_script"]))
                line += ("; the parts: submission call %.1f ms (sbatch %.1f), launch %.1f ms (bare %.1f; python3's start"
                         " %.1f of it, date's %.1f), together %+.1f ms; the rest is the wait for a scheduler pass"
                         " (%.1f ms against %.1f), the same for both, at a random moment against the ticks"
                         % (med(r["call"]), med(bare["call"]), med(r["slurm_start_to_script"]), med(bare["slurm_start_to_script"]),
                            med(results["python"]), med(results["date"]), own, med(r["to_slurm_start"]) - med(r["call"]),
                            med(bare["to_slurm_start"]) - med(bare["call"])))
            print(line)
    for b in backends:
        r, a = results["latency", b], results["asha", b]
        print("%-10s sweep wall: %.1f s for %d trials (%.0f ms each); ASHA: %d rung decisions, %d of %d trials pruned, %.1f s"
              % (b, r["wall"], n, 1000 * r["wall"] / n, a["rungs"], a["pruned"], n, a["wall"]))
    print("poll_seconds %g bounds what the sweeper waits for: a rung decision and a trial's end are seen at the next pass,"
          " at most %g s (+ the pass itself) after they happen; submission is not polled (the pass that sees a trial end"
          " creates and submits the next at once)." % (poll, poll))
    print("total %.0f s; load average %.2f at the start, %.2f at the end (1 min)"
          % (time.time() - began, load_before, load[0]))
    if opt.out_svg:
        svg(rows, opt.out_svg, "tessera sweep overhead, %d trials, poll_seconds %g (ms)" % (n, poll))
        print("wrote " + opt.out_svg)


if __name__ == "__main__":
    main()
