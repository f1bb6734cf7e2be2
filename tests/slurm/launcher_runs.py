#!/usr/bin/env python3
"""launchers/slurm/train.sbatch on the real test cluster (tests/slurm/cluster.sh).

  launcher_runs.py --tessera BIN --mpirun MPIRUN --cluster CLUSTER_SH [--source-dir DIR]
                   [--launchers srun,mpirun]

Every job is `sbatch launchers/slurm/train.sbatch recipes/tiny.yaml --set ...` with 2
tasks on the one node, a small model (runs of a few seconds), its own TESSERA_LOG_DIR,
and the launcher chosen with TESSERA_LAUNCHER (srun --mpi=pmix when this Slurm has PMIx,
and mpirun). The reference is the same training under plain mpirun.

  same       the job trains, exits 0, and every step's loss equals the mpirun run's, bit
             for bit (run.jsonl metric losses).
  usr1       `scancel --signal=USR1 --batch JOB` mid-run (what --signal=B:USR1@120 does
             before the time limit): the ranks checkpoint, exit 75, the script requeues the
             job, Slurm starts it again (Restarts=1, SLURM_RESTART_COUNT=1 in its header
             line), the .slurm.out file still holds the first attempt's lines
             (--open-mode=append), the second run resumes from the checkpoint and its
             final loss equals the uninterrupted run's, bit for bit.
  requeue    `scontrol requeue JOB` mid-run (srun only): Slurm sends SIGTERM to every
             process, the ranks checkpoint and exit 75, the script logs the SIGTERM and does
             not requeue (Slurm does), the job runs again and ends with the same final loss.
  layout     a job whose task count does not match the layout fails with the one-line
             message once, suggesting srun/sbatch, and no MPI_ABORT text.

Exit 77 (skipped) when the test cluster is not running (slurm_cluster_start says why).
Standard library + numpy + h5py (through tests/mpi/layout_runs). Exit code 0 = pass.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mpi"))
from dp_runs import fail, run, show, series, parse_options  # noqa: E402
from layout_runs import prepare_data  # noqa: E402
from preempt_runs import run_logs, last_step_logged  # noqa: E402
from held_ranks import hold_when, signal_while_held  # noqa: E402

STEPS = 150
JOB_TIMEOUT = 180  # a job's run, its requeue (cred_expire + 1 s) and its second run
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def sets(work, name, extra=()):
    return ["model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=32",
            "data.train=" + os.path.join(work, "data", "train_*.bin"), "data.val=",
            "train.steps=%d" % STEPS, "train.global_batch=8", "train.micro_batch=2",
            "train.eval_every=0", "train.sample_tokens=0", "optim.warmup_steps=10",
            "log.every=1", "log.dir=" + os.path.join(work, "runs_" + name),
            "checkpoint.dir=" + os.path.join(work, "ckpt_" + name), "parallel.dp=2"] + list(extra)


def set_args(values):
    out = []
    for s in values:
        out += ["--set", s]
    return out


def slurm(cmd, timeout=30):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        fail("%s failed\n%s" % (" ".join(cmd), show(p)))
    return p.stdout


def submit(opt, work, name, launcher, extra=(), ntasks=2):
    env = dict(os.environ, TESSERA=opt.tessera, TESSERA_LAUNCHER=launcher,
               TESSERA_LOG_DIR=os.path.join(work, "logs_" + name))
    cmd = ["sbatch", "--parsable", "--job-name=" + name, "--ntasks-per-node=%d" % ntasks,
           os.path.join(opt.source_dir, "launchers", "slurm", "train.sbatch"),
           os.path.join(opt.source_dir, "recipes", "tiny.yaml")] + set_args(sets(work, name, extra))
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        fail("sbatch failed\n" + show(p))
    return p.stdout.strip().split(";")[0]


def job_fields(job):
    out = slurm(["scontrol", "show", "job", "-o", job])
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job, what, done, timeout=JOB_TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        fields = job_fields(job)
        if done(fields):
            return fields
        time.sleep(0.25)
    fail("job %s: %s did not happen within %d s: %s" % (job, what, timeout, job_fields(job)))


def wait_until_done(job):
    return wait_for(job, "the end", lambda f: f.get("JobState") in TERMINAL)


def read_text(path):
    with open(path) as f:
        return f.read()


def job_outputs(work, name, job):
    """Slurm's output file and the training log of the job."""
    return (read_text(os.path.join(work, "tessera-%s.slurm.out" % job)),
            read_text(os.path.join(work, "logs_" + name, "tessera-%s.log" % job)))


def hold_ranks_mid_run(opt, work, name, job, step=2):
    """SIGSTOPs the job's 2 ranks as soon as step `step` is logged; returns their pids."""
    next_state_check = [0]

    def ready():
        if time.time() > next_state_check[0]:  # scontrol takes longer than the whole run
            state = job_fields(job).get("JobState")
            if state in TERMINAL:
                fail("job %s ended (%s) before step %d" % (job, state, step))
            next_state_check[0] = time.time() + 1
        return last_step_logged(work, name) >= step
    return hold_when(opt.tessera, "checkpoint.dir=" + os.path.join(work, "ckpt_" + name), 2,
                     ready, fail, JOB_TIMEOUT)


def expect_completed(job, fields, work, name, restarts):
    if fields.get("JobState") != "COMPLETED" or fields.get("ExitCode") != "0:0" or \
            fields.get("Restarts") != str(restarts):
        out, log = job_outputs(work, name, job)
        fail("job %s: %s, expected COMPLETED 0:0 with Restarts=%d\n--- slurm.out ---\n%s"
             "--- log ---\n%s" % (job, {k: fields.get(k) for k in ("JobState", "ExitCode", "Restarts")},
                                  restarts, out, log))


def reference(opt, work):
    """The uninterrupted run under plain mpirun: its (step, loss) series."""
    p = run([opt.mpirun, "-n", "2", opt.tessera, "train",
             os.path.join(opt.source_dir, "recipes", "tiny.yaml")] + set_args(sets(work, "mpirun")),
            work, 300)
    if p.returncode != 0:
        fail("the mpirun run failed\n" + show(p))
    logs = run_logs(work, "mpirun")
    return series(logs[0], "metric", "loss")


def same_as_mpirun(opt, work, want, launcher):
    name = "same_" + launcher
    t0 = time.time()
    job = submit(opt, work, name, launcher)
    fields = wait_until_done(job)
    expect_completed(job, fields, work, name, 0)
    got = series(run_logs(work, name)[0], "metric", "loss")
    if got != want:
        diff = [(a, b) for a, b in zip(want, got) if a != b][:3]
        fail("%s: the sbatch run's losses differ from mpirun's (%d vs %d steps; first: %s)"
             % (name, len(got), len(want), diff))
    out, log = job_outputs(work, name, job)
    launch = "srun --mpi=pmix" if launcher == "srun" else "mpirun -n 2"
    if "train.sbatch: " + launch not in out:
        fail("%s: the job did not launch with %s:\n%s" % (name, launch, out))
    print("  same/%s: job %s, %d steps, every loss bit-identical to mpirun's (final %r), %.1f s"
          % (launcher, job, len(got), got[-1][1], time.time() - t0), flush=True)


def interrupted(opt, work, want, launcher, how):
    """Stop the job mid-run with `how` (usr1 or requeue); it must come back and finish."""
    name = "%s_%s" % (how, launcher)
    t0 = time.time()
    job = submit(opt, work, name, launcher)
    # Held a few steps in until the signal is pending on them (held_ranks.py says why).
    ranks = hold_ranks_mid_run(opt, work, name, job)
    if how == "usr1":
        send = lambda: slurm(["scancel", "--signal=USR1", "--batch", job])
    else:
        send = lambda: slurm(["scontrol", "requeue", job])
    t_signal = time.time()
    signal_while_held(ranks, send, signal.SIGUSR1 if how == "usr1" else signal.SIGTERM, fail)
    wait_for(job, "the requeue", lambda f: f.get("Restarts") == "1" or f.get("JobState") in TERMINAL)
    fields = wait_until_done(job)
    expect_completed(job, fields, work, name, 1)
    out, log = job_outputs(work, name, job)
    first, second = run_logs(work, name)
    end = first[-1]
    if end.get("event") != "run_end" or end.get("status") != "interrupted":
        fail("%s: the first run's log ends with %s" % (name, end))
    stopped = end["step"]
    signal_name = "SIGUSR1" if how == "usr1" else "SIGTERM"
    if not end.get("reason", "").startswith("preempted: " + signal_name):
        fail("%s: the first run stopped for %r, expected %s" % (name, end.get("reason"), signal_name))
    if second[0].get("resumed_from", {}).get("step") != stopped:
        fail("%s: the second run did not resume from step %d: %s"
             % (name, stopped, second[0].get("resumed_from")))
    got = series(second, "metric", "loss")[-1]
    if got != want[-1]:
        fail("%s: final loss after the requeue %r, uninterrupted %r" % (name, got, want[-1]))
    # Slurm's output file holds both attempts (--open-mode=append), each with its header.
    if how == "usr1":
        expected = ["(restart 0)", "SIGUSR1, the time limit is near", "exit status 75",
                    "requeueing job " + job, "(restart 1)", "exit status 0"]
    else:
        expected = ["(restart 0)", "SIGTERM (preemption, requeue or cancel)", "exit status 75",
                    "not requeueing", "(restart 1)", "exit status 0"]
    pos = 0
    for text in expected:
        found = out.find(text, pos)
        if found < 0:
            fail("%s: %r missing (in this order: %s) from the .slurm.out file:\n%s"
                 % (name, text, expected, out))
        pos = found + len(text)
    print("  %s/%s: job %s stopped after step %d (exit 75), requeued (Restarts=1), resumed; "
          "final loss %r bit-identical; back %.1f s after the signal, %.1f s in all"
          % (how, launcher, job, stopped, got[1], time.time() - t_signal, time.time() - t0),
          flush=True)


def layout_mismatch(opt, work, launcher):
    name = "layout_" + launcher
    job = submit(opt, work, name, launcher, ["parallel.dp=1"])
    fields = wait_until_done(job)
    out, log = job_outputs(work, name, job)
    lines = [l for l in log.splitlines() if l.startswith("tessera: ")]
    pattern = (r"tessera: error: parallel layout dp=1 x tp=1 x pp=1 = 1 rank, but the job has 2 "
               r"MPI ranks \(start it with srun -n 1 or sbatch --ntasks=1, or change "
               r"parallel\.dp/tp/pp\)")
    if fields.get("JobState") != "FAILED" or len(lines) != 1 or not re.fullmatch(pattern, lines[0]):
        fail("%s: expected a FAILED job with the message once, got %s, lines %s\n%s"
             % (name, fields.get("JobState"), lines, log))
    if "MPI_ABORT" in log or "MPI_ABORT" in out:
        fail("%s: MPI_ABORT text in the output\n%s" % (name, log))
    print("  layout/%s: job %s FAILED (%s) with one line: %s"
          % (launcher, job, fields.get("ExitCode"), lines[0]), flush=True)


def main():
    opt = parse_options(__doc__, lambda ap: (
        ap.add_argument("--cluster", default=os.path.join(HERE, "cluster.sh")),
        ap.add_argument("--launchers", default="srun,mpirun")))
    status = subprocess.run(["bash", opt.cluster, "status"], capture_output=True, text=True)
    if status.returncode != 0:
        print("SKIP: the test Slurm cluster is not running (the test slurm_cluster_start says "
              "why):\n" + status.stdout)
        sys.exit(77)
    env_line = subprocess.run(["bash", opt.cluster, "env"], capture_output=True, text=True).stdout
    os.environ["SLURM_CONF"] = env_line.strip().split("=", 1)[1]
    launchers = opt.launchers.split(",")
    if "srun" in launchers and "pmix" not in subprocess.run(
            ["srun", "--mpi=list"], capture_output=True, text=True).stdout + \
            subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True).stderr:
        print("  (this Slurm has no PMIx plugin: the srun cases are left out)")
        launchers.remove("srun")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tessera_slurm_") as work:
        prepare_data(opt, work)
        want = reference(opt, work)
        print("  mpirun reference: %d steps, final loss %r, %.1f s" % (len(want), want[-1][1],
                                                                     time.time() - t0), flush=True)
        for launcher in launchers:
            same_as_mpirun(opt, work, want, launcher)
            interrupted(opt, work, want, launcher, "usr1")
        if "srun" in launchers:
            interrupted(opt, work, want, "srun", "requeue")
        layout_mismatch(opt, work, launchers[0])
    print("PASS (%.0f s)" % (time.time() - t0))


if __name__ == "__main__":
    main()
