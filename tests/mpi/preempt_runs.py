#!/usr/bin/env python3
"""Preemption (SIGUSR1: checkpoint, exit 75, resume) and crashes during a save.

  preempt_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

  signal   A 2-rank (dp = 2) run gets SIGUSR1 (sent to mpirun, which forwards it, as
           Slurm's --signal does to the batch script) a few steps in: every rank stops at a
           step boundary, checkpoints, the run log ends with run_end "interrupted", reason
           "preempted: SIGUSR1 ...", and the job exits with code 75 (what train.sbatch turns
           into `scontrol requeue`). Started again with checkpoint.resume = auto it resumes
           there and finishes with the same final loss, bit for bit, as a run that was
           never interrupted.
  kill -9  Rank 1 of a 2-rank run is killed with SIGKILL right after writing its shard of
           step 4 (TESSERA_TEST_KILL_IN_SAVE fault injection), before the checkpoint is
           published: the job ends, `latest` still names step 2, step 4 exists only as a
           .tmp directory, and a resumed run starts from step 2 and finishes.

Standard library + numpy + h5py (through layout_runs). Exit code 0 = pass.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, run, show, series, read_log, parse_options  # noqa: E402
from layout_runs import prepare_data  # noqa: E402

STEPS = 400


def args(opt, work, name, extra):
    sets = ["model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=32",
            "data.train=" + os.path.join(work, "data", "train_*.bin"), "data.val=",
            "train.steps=%d" % STEPS, "train.global_batch=8", "train.micro_batch=2",
            "train.eval_every=0", "train.sample_tokens=0", "optim.warmup_steps=10",
            "log.every=1", "log.dir=" + os.path.join(work, "runs_" + name),
            "checkpoint.dir=" + os.path.join(work, "ckpt_" + name), "parallel.dp=2"] + extra
    out = [opt.mpirun, "-n", "2", opt.tessera, "train",
           os.path.join(opt.source_dir, "recipes", "tiny.yaml")]
    for s in sets:
        out += ["--set", s]
    return out


def run_logs(work, name):
    d = os.path.join(work, "runs_" + name)
    out = []
    for r in sorted(os.listdir(d)):
        with open(os.path.join(d, r, "run.jsonl")) as f:
            out.append([json.loads(l) for l in f if l.strip()])
    return out


def last_step_logged(work, name):
    d = os.path.join(work, "runs_" + name)
    step = 0
    for r in os.listdir(d) if os.path.isdir(d) else []:
        with open(os.path.join(d, r, "run.jsonl")) as f:
            for line in f:
                if '"metric"' in line:
                    step = max(step, json.loads(line)["step"])
    return step


def preempt_by_signal(opt, work):
    p = run(args(opt, work, "straight", []), work, 300)
    if p.returncode != 0:
        fail("uninterrupted run failed\n" + show(p))
    want = series(read_log(work, "straight"), "metric", "loss")[-1]

    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = args(opt, work, "preempted", ["checkpoint.resume=auto"])
    job = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.time() + 120
    while last_step_logged(work, "preempted") < 5:
        if job.poll() is not None or time.time() > deadline:
            fail("the run ended or stalled before step 5: %s" % (job.communicate(),))
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    try:
        out, err = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()
        fail("the job did not stop after SIGUSR1 (a hang?)")
    if job.returncode != 75:
        fail("after SIGUSR1 the job exited with %d, expected 75\n%s\n%s" % (job.returncode, out, err))
    end = run_logs(work, "preempted")[0][-1]
    if end.get("event") != "run_end" or end.get("status") != "interrupted" or \
            not end.get("reason", "").startswith("preempted: SIGUSR1 after step "):
        fail("the preempted run's log ends with %s" % end)
    stopped = end["step"]
    if stopped >= STEPS:
        fail("the signal came too late: the run had finished (step %d)" % stopped)
    with open(os.path.join(work, "ckpt_preempted", "latest")) as f:
        if f.read().strip() != "step_%06d" % stopped:
            fail("latest does not name the checkpoint of step %d" % stopped)

    p = run(cmd, work, 300)  # the requeued job: same command
    if p.returncode != 0:
        fail("the resumed run failed\n" + show(p))
    second = run_logs(work, "preempted")[1]
    if second[0].get("resumed_from", {}).get("step") != stopped:
        fail("the second run did not resume from step %d: %s" % (stopped, second[0].get("resumed_from")))
    got = series(second, "metric", "loss")[-1]
    if got != want:
        fail("final loss after preemption %r, uninterrupted %r" % (got, want))
    print("  signal: stopped after step %d with exit 75, resumed, final loss %r bit-identical"
          % (stopped, got[1]), flush=True)


def killed_mid_save(opt, work):
    # ZeRO-1: rank 1 writes a shard of its own (its moments), and dies after writing it.
    cmd = args(opt, work, "killed", ["train.steps=6", "optim.warmup_steps=0", "checkpoint.every=2", "parallel.zero=1",
                                     "checkpoint.resume=auto"])
    os.environ["TESSERA_TEST_KILL_IN_SAVE"] = "1:4"
    p = run(cmd, work, 120)
    del os.environ["TESSERA_TEST_KILL_IN_SAVE"]
    if p.returncode == 0:
        fail("the job survived the SIGKILL of rank 1\n" + show(p))
    ckpt = os.path.join(work, "ckpt_killed")
    with open(os.path.join(ckpt, "latest")) as f:
        latest = f.read().strip()
    entries = sorted(os.listdir(ckpt))
    if latest != "step_000002" or "step_000004" in entries or \
            not any(e.startswith("step_000004.tmp-") for e in entries):
        fail("after the kill: latest = %s, entries %s" % (latest, entries))
    p = run(cmd, work, 120)
    if p.returncode != 0:
        fail("resuming after the kill failed\n" + show(p))
    logs = run_logs(work, "killed")
    resumed = [l for l in logs if l[0].get("resumed_from")]
    if len(resumed) != 1 or resumed[0][0]["resumed_from"]["step"] != 2 or \
            resumed[0][-1].get("status") != "ok":
        fail("the run after the kill did not resume from step 2 and finish: %s" % [l[0] for l in logs])
    print("  kill -9: latest stayed step_000002 (step 4 left as .tmp), the next run resumed from it",
          flush=True)


def main():
    opt = parse_options(__doc__)
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_preempt_") as work:
        prepare_data(opt, work)
        preempt_by_signal(opt, work)
        killed_mid_save(opt, work)
    print("PASS")


if __name__ == "__main__":
    main()
