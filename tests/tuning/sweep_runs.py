#!/usr/bin/env python3
"""End-to-end tests of `tessera sweep`, run by ctest (tests/CMakeLists.txt).

  sweep_runs.py asha --backend local|slurm|slurm-cli --tessera BIN
      Eight trials of the tiny recipe, one learning rate each (a grid in shuffled order),
      ASHA with rungs at 5, 10, 20 steps (factor 2) on val_loss. Checks: every rung
      decision recomputed from the journal alone (the value from the trial's run logs at
      the first step >= the rung, the competing values of the trials that reached the
      rung before it, Optuna's rule) equals the journaled one; the pruned trials' jobs
      stopped before the end; the best trial is the learning rate that is best by
      construction (the largest: 60 steps are too few for smaller ones to catch up); the
      report names it and states the compute spent against running every trial to the end.
      Writes decisions.json into --out (for `same-decisions`).

  sweep_runs.py same-decisions A.json B.json ...
      The backends took the same decisions (trial, rung, step, value, promoted).

  sweep_runs.py crash --backend local|slurm|slurm-cli --tessera BIN
      The same sweep, its sweeper killed with SIGKILL at fixed points (after creating a
      trial, before and after submitting, after a rung decision, after asking a job to
      stop: TESSERA_TEST_SWEEP_CRASH) and at random moments, and started again each time
      until it ends. Then: exactly one trial_end per trial, no trial's job submitted twice
      for the same attempt (one run_start per attempt in its run logs), the decisions of
      an uninterrupted sweep.

  sweep_runs.py requeue --backend slurm|slurm-cli --tessera BIN
      A trial job preempted mid-run (SIGUSR1 to its batch shell) checkpoints, is requeued
      and resumes; the sweeper waits through the requeue and records the trial completed,
      without a retry, with the objective of an uninterrupted run, bit for bit.

  sweep_runs.py tpe --tessera BIN
      TPE against random search on objective.py (a synthetic objective run as the trial
      command, through the same sweeper and journal) over several seeds.

  sweep_runs.py grid-restart --tessera BIN
      A grid sweep killed and restarted covers its grid exactly once.

  sweep_runs.py faults --tessera BIN
      Bad sweep files (empty space, a key the recipe lacks, a bad distribution, no Slurm):
      one line, exit 2, no sweep directory. A failing trial: retried once, then recorded
      failed with its exit code and the last lines of its output, and the sweep goes on. A
      second sweeper on a running sweep is refused; `sweep cancel` stops the sweeper and
      its running trial.

The slurm backends use the test suite's own cluster (tests/slurm/cluster.sh, --cluster);
when it is not running the test exits 77 (skipped). Standard library only. Exit code 0 = pass.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "slurm"))
from held_ranks import hold_when, signal_while_held  # noqa: E402
LRS = [1e-4, 3e-3, 1e-5, 5e-4, 2e-5, 1e-3, 5e-5, 2e-4]  # the best by construction: 3e-3
BEST_LR = 3e-3
STEPS = 60


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def env():
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return e


def run(cmd, cwd, timeout, extra_env=None):
    e = env()
    e.update(extra_env or {})
    print("$ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        fail("timed out after %d s: %s\nstdout:\n%s\nstderr:\n%s" % (timeout, " ".join(cmd), ex.stdout, ex.stderr))


def show(p):
    return "exit %d\n--- stdout ---\n%s--- stderr ---\n%s" % (p.returncode, p.stdout, p.stderr)


def prepare_data(tessera, work):
    with open(os.path.join(SOURCE, "data", "corpus", "kjv-genesis-exodus.txt")) as f:
        corpus = write_file(os.path.join(work, "corpus.txt"), f.read(60000))
    p = run([tessera, "data", "prepare", "--input", corpus, "--out", os.path.join(work, "data"),
             "--tokenizer", "bytes"], work, 60)
    if p.returncode != 0:
        fail("data prepare failed\n" + show(p))


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def backend_lines(backend):
    if backend == "local":
        return "backend: local\n"
    return "backend: slurm\nslurm: {interface: %s}\n" % ("cli" if backend == "slurm-cli" else "api")


def write_asha_sweep(work, name, backend):
    sets = ["model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=64",
            "data.train=data/train_*.bin", "data.val=data/val_*.bin", "train.steps=%d" % STEPS,
            "train.global_batch=8", "train.micro_batch=8", "train.eval_every=5", "train.eval_batches=1",
            "train.sample_tokens=0", "optim.warmup_steps=0", "optim.min_lr=1e-6", "log.every=1", "checkpoint.every=10"]
    text = ("recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
            "set: [%s]\n" % ", ".join(sets) +
            "space:\n  optim.lr: {choice: [%s]}\n" % ", ".join(repr(x) for x in LRS) +
            "objective: {metric: val_loss, mode: min}\n"
            "sampler: {kind: grid}\n"
            "scheduler: {kind: asha, min_resource: 5, reduction_factor: 2}\n"
            "max_trials: 8\nmax_concurrent: 1\npoll_seconds: 0.2\n"
            "trial: {ntasks: 1, cpus_per_task: 1, time_limit_minutes: 10}\n" + backend_lines(backend) +
            "dir: sweeps/%s\n" % name)
    return write_file(os.path.join(work, name + ".yaml"), text)


def read_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
    return out


def trial_series(trial_dir, metric):
    """The trial's metric by step over all its runs, later runs winning (as the sweeper reads it)."""
    series = {}
    runs = os.path.join(trial_dir, "runs")
    for run_id in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        log = os.path.join(runs, run_id, "run.jsonl")
        if not os.path.isfile(log):  # a run that has made its directory but not its log yet
            continue
        for e in read_jsonl(log):
            if e.get("event") in ("metric", "eval") and metric in e:
                series[e["step"]] = e[metric]
    return series


def promotable(value, competing, factor):
    values = sorted(competing + [value])
    index = len(values) // factor - 1
    if index == -1:
        index = 0
    return value <= values[index]


def check_decisions(sweep_dir):
    """Recomputes every rung decision from the journal and the run logs; returns them."""
    events = read_jsonl(os.path.join(sweep_dir, "journal.jsonl"))
    at_rung = {}  # rung -> values recorded so far, in journal order
    decisions = []
    for e in events:
        if e["event"] != "rung":
            continue
        series = trial_series(os.path.join(sweep_dir, "trials", str(e["trial"])), "val_loss")
        resource = 5 * 2 ** e["rung"]
        step = min(s for s in series if s >= resource)
        if e["resource"] != resource or e["step"] != step or e["value"] != series[step]:
            fail("rung event %s: expected resource %d, step %d, value %r" % (e, resource, step, series[step]))
        earlier = at_rung.setdefault(e["rung"], [])
        if sorted(e["competing"]) != sorted(earlier):
            fail("rung event %s: competing values should be %r" % (e, earlier))
        if e["promoted"] != promotable(e["value"], earlier, 2):
            fail("rung event %s: Optuna's rule says promoted=%s" % (e, not e["promoted"]))
        earlier.append(e["value"])
        decisions.append([e["trial"], e["rung"], e["step"], e["value"], e["promoted"]])
    # Rungs in order per trial, and a trial not promoted ends pruned (and only then).
    ends = {e["trial"]: e["state"] for e in events if e["event"] == "trial_end"}
    for trial in ends:
        rungs = [d for d in decisions if d[0] == trial]
        if [d[1] for d in rungs] != list(range(len(rungs))):
            fail("trial %d: rungs decided out of order or skipped: %r" % (trial, rungs))
        stopped = bool(rungs) and rungs[-1][4] is False
        if stopped != (ends[trial] == "pruned"):
            fail("trial %d ended %s, but its last rung decision was %r" % (trial, ends[trial], rungs[-1:]))
    return decisions, events


def check_sweep_result(sweep_dir, stopped_early=True):
    decisions, events = check_decisions(sweep_dir)
    ends = [e for e in events if e["event"] == "trial_end"]
    created = [e for e in events if e["event"] == "trial_created"]
    if len(created) != 8 or sorted(e["trial"] for e in ends) != list(range(8)):
        fail("expected 8 trials with one trial_end each, got %d created and ends %r" % (len(created), [e["trial"] for e in ends]))
    pruned = [e for e in ends if e["state"] == "pruned"]
    completed = [e for e in ends if e["state"] == "completed"]
    if not pruned or not completed:
        fail("expected some trials pruned and some completed: %r" % [(e["trial"], e["state"]) for e in ends])
    # A stopped trial keeps its run log and its last checkpoint (the job checkpoints when
    # it is cancelled): `latest` names a complete checkpoint at its last logged step.
    for e in pruned:
        ckpt = os.path.join(sweep_dir, "trials", str(e["trial"]), "ckpt")
        latest = open(os.path.join(ckpt, "latest")).read().strip() if os.path.exists(os.path.join(ckpt, "latest")) else ""
        if not latest or not os.path.exists(os.path.join(ckpt, latest, "index.h5")):
            fail("pruned trial %d has no complete checkpoint (latest %r)" % (e["trial"], latest))
        if stopped_early and int(latest.split("_")[-1]) != e["steps"]:
            fail("pruned trial %d: its last checkpoint %s is not at its last step %d" % (e["trial"], latest, e["steps"]))
    best = min(completed, key=lambda e: e["objective"])
    best_lr = created[best["trial"]]["params"]["optim.lr"]
    if best_lr != BEST_LR:
        fail("the best trial has lr %r, expected %r" % (best_lr, BEST_LR))
    if not any(d[4] is False for d in decisions):
        fail("no trial was stopped at a rung")
    steps_run = sum(e["steps"] for e in ends)
    # Stopped trials end a few steps after their rung (the job finishes its step and
    # checkpoints), unless the sweeper was dead while they ran on.
    if stopped_early and steps_run > 0.75 * 8 * STEPS:
        fail("ASHA saved too little: %d steps run of %d" % (steps_run, 8 * STEPS))
    report = open(os.path.join(sweep_dir, "report.md")).read()
    if ("trial %d" % best["trial"]) not in report.lower() or "report.svg" not in report:
        fail("report.md does not name the best trial %d or link the picture:\n%s" % (best["trial"], report))
    print("best trial %d (lr %g), %s; %d steps run of %d for every trial to the end (%.0f%%)" % (
        best["trial"], best_lr, best["objective"], steps_run, 8 * STEPS, 100.0 * steps_run / (8 * STEPS)))
    return decisions, events


def start_sweep(opt, work, sweep_file, extra_env=None):
    e = env()
    e.update(extra_env or {})
    return subprocess.Popen([opt.tessera, "sweep", "run", sweep_file], cwd=work, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def asha(opt):
    if opt.out and os.path.exists(opt.out):
        os.remove(opt.out)  # only this run's decisions may be compared
    work = tempfile.mkdtemp(prefix="sweep_asha_")
    prepare_data(opt.tessera, work)
    sweep = write_asha_sweep(work, "asha", opt.backend)
    p = run([opt.tessera, "sweep", "run", sweep], work, 900)
    if p.returncode != 0:
        fail("sweep failed\n" + show(p))
    print(p.stdout)
    decisions, _ = check_sweep_result(os.path.join(work, "sweeps", "asha"))
    status = run([opt.tessera, "sweep", "status", os.path.join(work, "sweeps", "asha")], work, 60)
    if status.returncode != 0 or status.stdout.count("\n") < 9:
        fail("sweep status\n" + show(status))
    print(status.stdout)
    if opt.out:
        with open(opt.out, "w") as f:
            json.dump(decisions, f)
    shutil.rmtree(work)


def same_decisions(files):
    """Every decisions file that exists (a backend whose test was skipped wrote none) is equal."""
    present = [f for f in files if os.path.exists(f)]
    if len(present) < 2:
        print("SKIP: fewer than two backends wrote their decisions: %s" % present)
        sys.exit(77)
    first = json.load(open(present[0]))
    for f in present[1:]:
        if json.load(open(f)) != first:
            fail("%s and %s hold different decisions:\n%s\n%s" % (present[0], f, first, json.load(open(f))))
    print("%d identical decisions from %s" % (len(first), ", ".join(present)))


def run_until_done(opt, work, sweep_file, crash_points, random_kills, rng):
    """Runs the sweeper to its end, killing it at each crash point and at random moments."""
    restarts = 0
    for point in crash_points:
        p = run([opt.tessera, "sweep", "run", sweep_file], work, 900, {"TESSERA_TEST_SWEEP_CRASH": point})
        if p.returncode != -signal.SIGKILL:
            fail("the sweeper did not reach crash point %s\n%s" % (point, show(p)))
        restarts += 1
    for _ in range(random_kills):
        proc = start_sweep(opt, work, sweep_file)
        time.sleep(rng.uniform(0.2, 4.0))
        if proc.poll() is None:
            proc.kill()
            restarts += 1
        proc.communicate()
    p = run([opt.tessera, "sweep", "run", sweep_file], work, 900)
    if p.returncode != 0:
        fail("the last restart failed\n" + show(p))
    return restarts


def crash(opt):
    work = tempfile.mkdtemp(prefix="sweep_crash_")
    prepare_data(opt.tessera, work)
    reference = write_asha_sweep(work, "reference", opt.backend)
    p = run([opt.tessera, "sweep", "run", reference], work, 900)
    if p.returncode != 0:
        fail("reference sweep failed\n" + show(p))
    expected, _ = check_sweep_result(os.path.join(work, "sweeps", "reference"))
    sweep = write_asha_sweep(work, "crashed", opt.backend)
    rng = random.Random(opt.seed)
    points = ["after_created:2", "before_submit:3", "after_submit:1", "after_rung:2",
              "after_prune_decision:1", "after_stopping:1"]
    restarts = run_until_done(opt, work, sweep, points, 4, rng)
    sweep_dir = os.path.join(work, "sweeps", "crashed")
    decisions, events = check_sweep_result(sweep_dir, stopped_early=False)
    for trial in range(8):
        attempts = {e["attempt"] for e in events if e["event"] == "trial_submitted" and e["trial"] == trial}
        runs_dir = os.path.join(sweep_dir, "trials", str(trial), "runs")
        starts = sum(1 for r in os.listdir(runs_dir)
                     for e in read_jsonl(os.path.join(runs_dir, r, "run.jsonl")) if e["event"] == "run_start")
        if starts != len(attempts):
            fail("trial %d: %d runs started for %d attempts (a trial ran twice)" % (trial, starts, len(attempts)))
    if decisions != expected:
        fail("decisions after %d restarts differ from the uninterrupted sweep:\n%s\n%s" % (restarts, decisions, expected))
    print("%d restarts; one result per trial; decisions identical to the uninterrupted sweep" % restarts)
    shutil.rmtree(work)


def synthetic_sweep(work, name, sampler, seed, trials):
    text = ("recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
            "set: [optim.min_lr=0]\n"
            "space:\n  optim.lr: {loguniform: [1.0e-5, 1.0e-1]}\n  optim.weight_decay: {uniform: [0.0, 0.2]}\n"
            "objective: {metric: val_loss, mode: min}\n"
            "sampler: {kind: %s, seed: %d}\n" % (sampler, seed) +
            "max_trials: %d\nmax_concurrent: 1\npoll_seconds: 0.02\n" % trials +
            "trial: {command: [/usr/bin/python3, %s]}\n" % os.path.join(HERE, "objective.py") +
            "dir: sweeps/%s\n" % name)
    return write_file(os.path.join(work, name + ".yaml"), text)


def best_objective(sweep_dir):
    ends = [e for e in read_jsonl(os.path.join(sweep_dir, "journal.jsonl")) if e["event"] == "trial_end"]
    return min(e["objective"] for e in ends if e["state"] == "completed")


def tpe(opt):
    work = tempfile.mkdtemp(prefix="sweep_tpe_")
    seeds, trials = range(1, 6), 30
    results = {"tpe": [], "random": []}
    for seed in seeds:
        for sampler in results:
            name = "%s-%d" % (sampler, seed)
            p = run([opt.tessera, "sweep", "run", synthetic_sweep(work, name, sampler, seed, trials)], work, 600)
            if p.returncode != 0:
                fail("sweep %s failed\n%s" % (name, show(p)))
            results[sampler].append(best_objective(os.path.join(work, "sweeps", name)))
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    wins = sum(t < r for t, r in zip(results["tpe"], results["random"]))
    print("best objective after %d trials, per seed: tpe %s, random %s" % (
        trials, ["%.4f" % x for x in results["tpe"]], ["%.4f" % x for x in results["random"]]))
    print("mean: tpe %.4f, random %.4f; tpe better on %d of %d seeds" % (mean["tpe"], mean["random"], wins, len(seeds)))
    # Stated margin: TPE's mean best is at most half of random's, and it wins on most seeds.
    if not (mean["tpe"] <= 0.5 * mean["random"] and wins >= 4):
        fail("TPE does not beat random search by the stated margin")
    shutil.rmtree(work)


def grid_restart(opt):
    work = tempfile.mkdtemp(prefix="sweep_grid_")
    text = ("recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
            "set: [optim.min_lr=0]\n"
            "space:\n  optim.lr: {choice: [0.001, 0.003, 0.01]}\n  optim.weight_decay: {choice: [0.0, 0.05, 0.1]}\n"
            "sampler: {kind: grid}\nmax_trials: 100\nmax_concurrent: 2\npoll_seconds: 0.02\n"
            "trial: {command: [/usr/bin/python3, %s]}\n" % os.path.join(HERE, "objective.py"))
    sweep = write_file(os.path.join(work, "grid.yaml"), text)
    run_until_done(opt, work, sweep, ["after_created:4", "after_submit:3", "before_submit:1"], 0, random.Random(1))
    events = read_jsonl(os.path.join(work, "sweeps", "grid", "journal.jsonl"))
    points = sorted((e["params"]["optim.lr"], e["params"]["optim.weight_decay"]) for e in events if e["event"] == "trial_created")
    expected = sorted((a, b) for a in (0.001, 0.003, 0.01) for b in (0.0, 0.05, 0.1))
    if points != expected:
        fail("the grid was not covered exactly once: %r" % points)
    ends = sorted(e["trial"] for e in events if e["event"] == "trial_end")
    if ends != list(range(9)):
        fail("expected one trial_end per grid point: %r" % ends)
    print("9 grid points, each once, after 3 crashes")
    shutil.rmtree(work)


def use_test_cluster(cluster):
    """Points the Slurm clients at the test cluster; exit 77 (skip) when it is not running."""
    status = subprocess.run(["bash", cluster, "status"], capture_output=True, text=True)
    if status.returncode != 0:
        print("SKIP: the test Slurm cluster is not running (the test slurm_cluster_start says why)\n"
              + status.stdout + status.stderr)
        sys.exit(77)
    env_line = subprocess.run(["bash", cluster, "env"], capture_output=True, text=True).stdout
    os.environ["SLURM_CONF"] = env_line.strip().split("=", 1)[1]


def one_trial_sweep(work, name, backend, steps):
    """One training trial (no scheduler) with a checkpoint every 10 steps."""
    sets = ["model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=64",
            "data.train=data/train_*.bin", "data.val=data/val_*.bin", "train.steps=%d" % steps,
            "train.global_batch=8", "train.micro_batch=8", "train.eval_every=10", "train.eval_batches=1",
            "train.sample_tokens=0", "log.every=1", "checkpoint.every=10"]
    return write_file(os.path.join(work, name + ".yaml"),
                      "recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
                      "set: [%s]\n" % ", ".join(sets) + "space:\n  optim.lr: {choice: [0.003]}\n"
                      "sampler: {kind: grid}\nmax_trials: 1\npoll_seconds: 0.2\n" + backend_lines(backend) +
                      "dir: sweeps/%s\n" % name)


def requeue(opt):
    """A trial job preempted mid-run (SIGUSR1 to its batch shell, as Slurm's time-limit
    warning sends) checkpoints, is requeued by train.sbatch and resumes; the sweeper waits
    for it through the requeue and records it completed with the objective of a run that
    was never interrupted, bit for bit, without a retry."""
    work = tempfile.mkdtemp(prefix="sweep_requeue_")
    prepare_data(opt.tessera, work)
    steps = 300
    p = run([opt.tessera, "sweep", "run", one_trial_sweep(work, "steady", opt.backend, steps)], work, 600)
    if p.returncode != 0:
        fail("the uninterrupted sweep failed\n" + show(p))
    expected = [e for e in read_jsonl(os.path.join(work, "sweeps", "steady", "journal.jsonl")) if e["event"] == "trial_end"]
    sweeper = start_sweep(opt, work, one_trial_sweep(work, "preempted", opt.backend, steps))
    sweep_dir = os.path.join(work, "sweeps", "preempted")
    # The trial's rank is held at step 20 until the signal is pending on it (held_ranks.py).
    trial_dir = os.path.join(sweep_dir, "trials", "0")
    rank = hold_when(opt.tessera, os.path.join("preempted", "trials", "0", "ckpt"), 1,
                     lambda: max(trial_series(trial_dir, "loss") or [0]) >= 20, fail, 120)
    job = [e for e in read_jsonl(os.path.join(sweep_dir, "journal.jsonl")) if e["event"] == "trial_submitted"][0]["job_id"]

    def send():
        signal_job = run(["scancel", "--signal=USR1", "--batch", job], work, 30)
        if signal_job.returncode != 0:
            fail("scancel --signal failed\n" + show(signal_job))
    signal_while_held(rank, send, signal.SIGUSR1, fail)
    out, _ = sweeper.communicate(timeout=600)
    if sweeper.returncode != 0:
        fail("the preempted sweep failed\n" + out)
    events = read_jsonl(os.path.join(sweep_dir, "journal.jsonl"))
    ends = [e for e in events if e["event"] == "trial_end"]
    runs_dir = os.path.join(sweep_dir, "trials", "0", "runs")
    starts = sum(1 for r in os.listdir(runs_dir) for e in read_jsonl(os.path.join(runs_dir, r, "run.jsonl"))
                 if e["event"] == "run_start")
    if any(e["event"] == "trial_retry" for e in events) or len(ends) != 1 or ends[0]["state"] != "completed":
        fail("expected one completed trial and no retry: %r" % [e for e in events if e["event"].startswith("trial_")])
    if starts != 2:
        fail("expected the job to run twice (preempted, then requeued), got %d run starts" % starts)
    if ends[0]["objective"] != expected[0]["objective"] or ends[0]["steps"] != steps:
        fail("requeued objective %r after %d steps, uninterrupted %r" % (ends[0]["objective"], ends[0]["steps"], expected[0]["objective"]))
    stopped = min(e["step"] for r in os.listdir(runs_dir) for e in read_jsonl(os.path.join(runs_dir, r, "run.jsonl"))
                  if e["event"] == "run_end")
    print("trial job %s preempted after step %d, requeued by Slurm and resumed: objective %r, as uninterrupted"
          % (job, stopped, ends[0]["objective"]))
    shutil.rmtree(work)


def objective_sweep(work, name, space, extra=""):
    """A sweep of objective.py (the synthetic objective) with the given space lines."""
    return write_file(os.path.join(work, name + ".yaml"),
                      "recipe: %s\n" % os.path.join(SOURCE, "recipes", "tiny.yaml") +
                      "set: [optim.min_lr=0]\nspace:\n" + space +
                      "sampler: {kind: grid}\nmax_trials: 10\nmax_concurrent: 1\npoll_seconds: 0.05\n"
                      "trial: {command: [/usr/bin/python3, %s]}\n" % os.path.join(HERE, "objective.py") +
                      extra + "dir: sweeps/%s\n" % name)


def expect_one_line_error(p, words, work, name):
    errors = [l for l in p.stderr.splitlines() if l.strip()]
    if p.returncode != 2 or len(errors) != 1 or not errors[0].startswith("tessera: error:") or words not in errors[0]:
        fail("expected exit 2 and one line with %r\n%s" % (words, show(p)))
    if os.path.exists(os.path.join(work, "sweeps", name)):
        fail("a refused sweep %s left a sweep directory" % name)
    print("refused in one line: " + errors[0])


def bad_input(opt, work):
    cases = [
        ("empty", "  {}\n", "", "space: expected a mapping of recipe keys"),
        ("unknown_key", "  optim.learning_rate: {choice: [0.1, 0.2]}\n", "", "unknown key"),
        ("bad_distribution", "  optim.lr: {gaussian: [0.1, 0.2]}\n", "", "unknown key 'space.optim.lr.gaussian'"),
        ("no_slurm", "  optim.lr: {choice: [0.1]}\n", "backend: slurm\n", "no Slurm configuration"),
    ]
    for name, space, extra, words in cases:
        sweep = objective_sweep(work, name, space, extra)
        if name == "empty":  # a mapping with nothing in it
            write_file(sweep, open(sweep).read().replace("space:\n  {}\n", "space: {}\n"))
        p = run([opt.tessera, "sweep", "run", sweep], work, 120, {"SLURM_CONF": "/nonexistent/slurm.conf"})
        expect_one_line_error(p, words, work, name)


def failing_trial(opt, work):
    sweep = objective_sweep(work, "failing", "  train.seed: {choice: [1, 666]}\n",
                            "trial: {command: [/usr/bin/python3, %s], retries: 1}\n" % os.path.join(HERE, "objective.py"))
    write_file(sweep, open(sweep).read().replace("trial: {command: [/usr/bin/python3, %s]}\n" % os.path.join(HERE, "objective.py"), "", 1))
    p = run([opt.tessera, "sweep", "run", sweep], work, 120)
    if p.returncode != 0:
        fail("a sweep with one failing trial should end with exit 0 (another completed)\n" + show(p))
    events = read_jsonl(os.path.join(work, "sweeps", "failing", "journal.jsonl"))
    retries = [e for e in events if e["event"] == "trial_retry"]
    ends = {e["trial"]: e for e in events if e["event"] == "trial_end"}
    if len(retries) != 1 or retries[0]["trial"] != 1:
        fail("expected one retry of trial 1: %r" % retries)
    if ends[0]["state"] != "completed" or ends[1]["state"] != "failed" or ends[1]["exit_code"] != 3 \
            or "refusing train.seed 666" not in ends[1]["log_tail"]:
        fail("expected trial 0 completed and trial 1 failed with exit code 3 and its message: %r" % ends)
    status = run([opt.tessera, "sweep", "status", sweep], work, 60)
    if "failed" not in status.stdout or "exit code 3" not in status.stdout:
        fail("status does not show the failure\n" + show(status))
    print("failing trial retried once, then recorded failed with exit code 3 and its log; the sweep went on")


def second_sweeper_and_cancel(opt, work):
    sweep = objective_sweep(work, "slow", "  optim.lr: {choice: [0.001, 0.01, 0.1]}\n")
    sweep_dir = os.path.join(work, "sweeps", "slow")
    first = start_sweep(opt, work, sweep, {"OBJECTIVE_SLEEP_S": "0.5"})
    journal = os.path.join(sweep_dir, "journal.jsonl")
    for _ in range(200):
        if os.path.exists(journal) and any(e["event"] == "trial_submitted" for e in read_jsonl(journal)):
            break
        time.sleep(0.05)
    second = run([opt.tessera, "sweep", "run", sweep], work, 60)
    if second.returncode != 2 or "another sweeper is running this sweep" not in second.stderr:
        fail("a second sweeper was not refused\n" + show(second))
    cancel = run([opt.tessera, "sweep", "cancel", sweep_dir], work, 120)
    if cancel.returncode != 0:
        fail("cancel failed\n" + show(cancel))
    out, _ = first.communicate(timeout=60)
    events = read_jsonl(journal)
    ends = [e for e in events if e["event"] == "trial_end"]
    if not ends or any(e["state"] != "cancelled" for e in ends) or events[-1]["event"] != "sweep_end" \
            or not events[-1]["cancelled"]:
        fail("expected the running trial cancelled and sweep_end cancelled: %r\n%s" % (events[-3:], out))
    job = [e for e in events if e["event"] == "trial_submitting"][0]["job_name"]
    pid = int(open(os.path.join(sweep_dir, "jobs", job + ".pid")).read())
    time.sleep(0.5)
    if os.path.exists("/proc/%d" % pid) and open("/proc/%d/stat" % pid).read().split(")")[1].split()[0] != "Z":
        fail("the cancelled trial's process %d still runs" % pid)
    print("second sweeper refused: " + second.stderr.strip())
    print("cancel stopped the sweeper and its trial")


def faults(opt):
    work = tempfile.mkdtemp(prefix="sweep_faults_")
    bad_input(opt, work)
    failing_trial(opt, work)
    second_sweeper_and_cancel(opt, work)
    shutil.rmtree(work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test", choices=["asha", "same-decisions", "crash", "tpe", "grid-restart", "faults", "requeue"])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--tessera")
    ap.add_argument("--backend", default="local", choices=["local", "slurm", "slurm-cli"])
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cluster", default=os.path.join(SOURCE, "tests", "slurm", "cluster.sh"),
                    help="the test Slurm cluster's script, for the slurm backends")
    opt = ap.parse_args()
    if opt.backend != "local":
        use_test_cluster(opt.cluster)
    if opt.tessera:
        opt.tessera = os.path.abspath(opt.tessera)
    {"asha": lambda: asha(opt), "crash": lambda: crash(opt), "tpe": lambda: tpe(opt),
     "grid-restart": lambda: grid_restart(opt), "faults": lambda: faults(opt), "requeue": lambda: requeue(opt),
     "same-decisions": lambda: same_decisions(opt.files)}[opt.test]()


if __name__ == "__main__":
    main()
