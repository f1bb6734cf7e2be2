#!/usr/bin/env python3
"""MPI tests of `tessera train`, run by ctest (tests/CMakeLists.txt).

  dp_runs.py equivalence --tessera BIN --mpirun MPIRUN
      The tiny recipe (small overrides) on 2 data-parallel ranks under mpirun gives the
      same per-step training losses as one process with dp=1, to a relative 1e-5;
      checked for two micro-batch splittings of the global batch.

  dp_runs.py val-equivalence --tessera BIN --mpirun MPIRUN
      The same runs give the same validation losses (eval lines) on 2 ranks as on 1:
      the validation set must not depend on the layout.

  dp_runs.py layout-mismatch --tessera BIN --mpirun MPIRUN
      mpirun -n 2 with parallel.dp=1 fails quickly (no hang) with a non-zero exit code;
      it prints the one clear layout message once (rank 0), with no MPI_ABORT banner;
      nothing crashes. So does train.device=cuda on 2 ranks without a GPU.

Standard library only. Exit code 0 = pass; anything else prints why.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

REL_TOL = 1e-5
FORBIDDEN = ["terminate called", "core dumped", "Segmentation", "backtrace", "internal error",
             "what():"]


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def run(cmd, cwd, timeout):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    print("$ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        fail("timed out after %d s (a hang?): %s\nstdout:\n%s\nstderr:\n%s"
             % (timeout, " ".join(cmd), e.stdout, e.stderr))
    return p


def show(p):
    return "exit %d\n--- stdout ---\n%s--- stderr ---\n%s" % (p.returncode, p.stdout, p.stderr)


def prepare_data(tessera, work):
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog. " * 300)
    p = run([tessera, "data", "prepare", "--input", corpus, "--out", os.path.join(work, "data"),
             "--tokenizer", "bytes"], work, 60)
    if p.returncode != 0:
        fail("data prepare failed\n" + show(p))


def recipe_args(tessera, source_dir, work, name, sets):
    """`tessera train recipes/tiny.yaml` with `--set` for each of `sets`, then this run's own
    log and checkpoint directories (runs_NAME, ckpt_NAME under work)."""
    args = [tessera, "train", os.path.join(source_dir, "recipes", "tiny.yaml")]
    for s in list(sets) + ["log.dir=" + os.path.join(work, "runs_" + name),
                           "checkpoint.dir=" + os.path.join(work, "ckpt_" + name)]:
        args += ["--set", s]
    return args


def train_args(tessera, source_dir, work, name, sets):
    base = [
        "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.steps=6", "train.global_batch=4", "train.micro_batch=2",
        "train.eval_every=3", "train.eval_batches=2", "train.sample_tokens=0",
        "optim.warmup_steps=0", "log.every=1",
    ]
    return recipe_args(tessera, source_dir, work, name, base + sets)


def read_log(work, name):
    log_dir = os.path.join(work, "runs_" + name)
    runs = sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []
    if len(runs) != 1:
        fail("expected one run directory in %s, found %s (only rank 0 may write)" % (log_dir, runs))
    with open(os.path.join(log_dir, runs[0], "run.jsonl")) as f:
        events = [json.loads(line) for line in f if line.strip()]
    if not events or events[-1].get("event") != "run_end" or events[-1].get("status") != "ok":
        fail("%s: the run did not end with run_end ok: %s" % (name, events[-1:] if events else "empty"))
    return events


def series(events, event, key):
    return [(e["step"], e[key]) for e in events if e.get("event") == event]


def close(a, b):
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def compare(name, ref, got):
    if [s for s, _ in ref] != [s for s, _ in got]:
        fail("%s: steps differ: %s vs %s" % (name, [s for s, _ in ref], [s for s, _ in got]))
    for (step, a), (_, b) in zip(ref, got):
        if a is None or b is None or not close(a, b):
            fail("%s at step %d: dp=1 gives %r, dp=2 gives %r (relative tolerance %g)"
                 % (name, step, a, b, REL_TOL))
    print("  %s agrees at steps %s" % (name, [s for s, _ in ref]))


def equivalence(opt, what="metric"):
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_dp_") as work:
        prepare_data(opt.tessera, work)
        p = run(train_args(opt.tessera, opt.source_dir, work, "dp1", ["parallel.dp=1"]), work, 90)
        if p.returncode != 0:
            fail("dp=1 run failed\n" + show(p))
        ref = read_log(work, "dp1")
        ref_loss, ref_val = series(ref, "metric", "loss"), series(ref, "eval", "val_loss")
        if len(ref_loss) != 6 or len(ref_val) != 2:
            fail("dp=1: expected 6 metric and 2 eval lines, got %d and %d" % (len(ref_loss), len(ref_val)))

        # micro_batch 2: one micro-batch per rank per step; micro_batch 1: two, accumulated.
        for micro in (2, 1):
            name = "dp2_mb%d" % micro
            cmd = [opt.mpirun, "-n", "2"] + train_args(
                opt.tessera, opt.source_dir, work, name,
                ["parallel.dp=2", "train.micro_batch=%d" % micro])
            p = run(cmd, work, 90)
            if p.returncode != 0:
                fail("%s run failed\n%s" % (name, show(p)))
            events = read_log(work, name)
            start = events[0]
            if start.get("event") != "run_start" or start.get("layout", {}).get("dp") != 2 \
                    or start["layout"].get("world") != 2:
                fail("%s: run_start layout is not dp=2 world=2: %s" % (name, start.get("layout")))
            if what == "metric":
                compare(name + " training loss", ref_loss, series(events, "metric", "loss"))
            else:
                compare(name + " validation loss", ref_val, series(events, "eval", "val_loss"))
    print("PASS")


def expect_one_error_line(p, pattern, what):
    """p failed with exactly one "tessera: ..." line, matching pattern, and no abort banner."""
    if p.returncode == 0:
        fail("%s: the job succeeded" % what)
    errors = [l for l in p.stderr.splitlines() if "tessera: " in l]
    if not errors:
        fail("%s: no 'tessera: error:' line" % what)
    for line in errors:
        if not pattern.match(line):
            fail("%s: unexpected error line: %r" % (what, line))
    if len(errors) != 1:
        fail("%s: %d error lines from 2 ranks (rank 0 alone prints it)" % (what, len(errors)))
    if "MPI_ABORT" in p.stderr or "MPI_ABORT" in p.stdout:
        fail("%s: MPI_ABORT banner for an error every rank raised" % what)
    for bad in FORBIDDEN:
        if bad in p.stderr or bad in p.stdout:
            fail("%s: output contains %r" % (what, bad))


def layout_mismatch(opt):
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_layout_") as work:
        prepare_data(opt.tessera, work)
        cmd = [opt.mpirun, "-n", "2"] + train_args(opt.tessera, opt.source_dir, work, "bad",
                                                   ["parallel.dp=1"])
        p = run(cmd, work, 60)
        print(show(p))
        # mpirun's hint, or srun's and sbatch's when this test runs inside a Slurm job.
        expect_one_error_line(p, re.compile(
            r"^tessera: error: parallel layout dp=1 x tp=1 x pp=1 = 1 ranks?, "
            r"but the job has 2 MPI ranks \(start it with (mpirun -n 1|srun -n 1 "
            r"or sbatch --ntasks=1,) or change parallel\.dp/tp/pp\)$"), "layout mismatch")
        if os.path.isdir(os.path.join(work, "runs_bad")) and os.listdir(os.path.join(work, "runs_bad")):
            fail("a run directory was created although the layout was refused at start-up")
        # train.device: cuda where no rank can use a GPU: said once, too (where the machine
        # has a GPU the run trains, and there is nothing to check).
        cmd = [opt.mpirun, "-n", "2"] + train_args(opt.tessera, opt.source_dir, work, "nogpu",
                                                   ["parallel.dp=2", "train.device=cuda"])
        p = run(cmd, work, 60)
        print(show(p))
        if p.returncode != 0:
            expect_one_error_line(p, re.compile(r"^tessera: error: .*(no usable CUDA device|"
                                                r"no CUDA backend)"), "cuda without a GPU")
    print("PASS")


def parse_options(doc, add_arguments=lambda ap: None):
    """The options every script here takes (--tessera, --mpirun, --source-dir), plus its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    opt = ap.parse_args()
    opt.tessera = os.path.abspath(opt.tessera)
    opt.source_dir = os.path.abspath(opt.source_dir)
    return opt


def main():
    opt = parse_options(__doc__, lambda ap: ap.add_argument(
        "test", choices=["equivalence", "val-equivalence", "layout-mismatch"]))
    if opt.test == "equivalence":
        equivalence(opt, "metric")
    elif opt.test == "val-equivalence":
        equivalence(opt, "eval")
    else:
        layout_mismatch(opt)


if __name__ == "__main__":
    main()
