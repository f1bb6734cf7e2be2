#!/usr/bin/env python3
"""Every parallel layout on GPUs over NCCL, against one GPU, step by step.

Runs `tessera train` with train.device=cuda under mpirun on 2 or 4 ranks, whose groups are
NCCL communicators (parallel.backend auto), and compares it with one process:

  - dp=2, dp=2 + ZeRO-1, tp=2, pp=2 with the GPipe and 1F1B schedules, and tp=2 x pp=2
    on 4 ranks: every loss, gradient norm and validation loss to 1e-5 relative (a split
    changes only the order of sums: the gradients', the row-parallel layers', the
    vocabulary's softmax);
  - dp=2 with bf16 gradients on the wire: the final validation loss within 1 %;
  - the ZeRO-1 run's checkpoint resumes on one CPU process, whose losses continue those
    of the one-GPU run (1e-4: the CPU's kernels round differently), and the tp=2 x pp=2
    run's on GPUs as dp=2 (1e-5);
  - a rank whose NCCL operation fails (TESSERA_NCCL_FAIL_AT), at its call or later as an
    asynchronous error that the watchdog finds, ends the job on every rank:
    exit 2, the error line once, within the time limit (no hang);
  - parallel.backend: mpi with GPU memory is refused with one line and exit 2.

With --tessera-gpu the emulated build (tessera_emulated_gpu: the CUDA and NCCL emulators,
ctest emulated_nccl_training) or, on a machine with GPUs, the real one.
Standard library only. Exit code 0 = pass; anything else prints why.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, read_log, series, recipe_args  # noqa: E402
from layout_runs import prepare_data  # noqa: E402
import training_runs  # noqa: E402  (tests/gpu: the comparison of two runs' series)

REL_TOL = 1e-5
STEPS = 8


def command(binary, opt, work, name, ranks, extra):
    sets = [
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.steps=%d" % STEPS, "train.global_batch=8", "train.micro_batch=2",
        "train.eval_every=4", "train.eval_batches=2", "train.sample_tokens=0",
        "optim.warmup_steps=2", "log.every=1", "checkpoint.every=4",
    ] + list(extra)
    args = recipe_args(binary, opt.source_dir, work, name, sets)
    return ([opt.mpirun, "-n", str(ranks)] + args) if ranks > 1 else args


def train(binary, opt, work, name, ranks, extra):
    p = run(command(binary, opt, work, name, ranks, extra), work, 600)
    if p.returncode != 0:
        fail("%s run failed\n%s" % (name, show(p)))
    return read_log(work, name)


def compare(what, ref, got, first_step=0, tol=REL_TOL):
    training_runs.compare(what, ref, got, first_step, tol, ref_name="one GPU")


def expect_refused(opt, work, name, ranks, extra, message):
    p = run(command(opt.tessera_gpu, opt, work, name, ranks, extra), work, 120)
    if p.returncode != 2 or message not in p.stderr:
        fail("%s: expected exit 2 and %r\n%s" % (name, message, show(p)))
    print("  %s: refused: %s" % (name, message))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True, help="the CPU build (resumes the GPU checkpoint)")
    ap.add_argument("--tessera-gpu", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    opt = ap.parse_args()
    cuda = ["train.device=cuda"]
    with tempfile.TemporaryDirectory(prefix="tessera_nccl_training_") as work:
        prepare_data(opt, work)
        one = train(opt.tessera_gpu, opt, work, "gpu1", 1, cuda)
        for name, ranks, extra in (("dp2", 2, ["parallel.dp=2", "parallel.zero=0"]),
                                   ("dp2_zero1", 2, ["parallel.dp=2", "parallel.zero=1"]),
                                   ("tp2", 2, ["parallel.tp=2"]),
                                   ("pp2_gpipe", 2, ["parallel.pp=2", "parallel.schedule=gpipe"]),
                                   ("pp2_1f1b", 2, ["parallel.pp=2", "parallel.schedule=1f1b"]),
                                   ("tp2_pp2", 4, ["parallel.tp=2", "parallel.pp=2"])):
            got = train(opt.tessera_gpu, opt, work, name, ranks, cuda + extra)
            sync = got[0].get("layout", {}).get("grad_sync")
            if name.startswith("dp") and sync != "nccl":
                fail("%s: run_start grad_sync is %r, expected nccl" % (name, sync))
            for kind, key in (("metric", "loss"), ("metric", "grad_norm"), ("eval", "val_loss")):
                compare("%s %s" % (name, key), series(one, kind, key), series(got, kind, key))

        bf16 = train(opt.tessera_gpu, opt, work, "dp2_bf16", 2,
                     cuda + ["parallel.dp=2", "parallel.zero=0", "parallel.grad_reduce=bf16"])
        a, b = series(one, "eval", "val_loss")[-1][1], series(bf16, "eval", "val_loss")[-1][1]
        if abs(a - b) / abs(a) > 0.01:
            fail("bf16 on the wire: final val_loss %.5f vs %.5f on one GPU" % (b, a))
        print("  dp2 bf16 on the wire: final val_loss %.5f vs %.5f" % (b, a))

        # The ZeRO-1 run's step-4 checkpoint, continued by one CPU process.
        resumed = train(opt.tessera, opt, work, "cpu_resume", 1,
                        ["checkpoint.resume=" + os.path.join(work, "ckpt_dp2_zero1", "step_000004")])
        compare("GPU dp2 ZeRO-1 checkpoint continued on the CPU: loss",
                series(one, "metric", "loss"), series(resumed, "metric", "loss"), 4, tol=1e-4)
        # The tp=2 x pp=2 run's, resharded to dp=2 on GPUs.
        resumed = train(opt.tessera_gpu, opt, work, "gpu_resume", 2,
                        cuda + ["parallel.dp=2", "checkpoint.resume=" +
                                os.path.join(work, "ckpt_tp2_pp2", "step_000004")])
        compare("GPU tp2 x pp2 checkpoint continued on GPUs as dp2: loss",
                series(one, "metric", "loss"), series(resumed, "metric", "loss"), 4)

        # Rank 1's 7th NCCL operation fails: as its call (an error NCCL returns), then as an
        # asynchronous error after it ran (a network failure), which the watchdog finds.
        for spec, expected in (("1:6", "injected failure"),
                               ("1:6:async", "injected asynchronous failure")):
            start = time.time()
            os.environ["TESSERA_NCCL_FAIL_AT"] = spec
            p = run(command(opt.tessera_gpu, opt, work, "fault", 2, cuda + ["parallel.dp=2"]),
                    work, 120)
            del os.environ["TESSERA_NCCL_FAIL_AT"]
            line = "tessera: error: communication failed in NcclCommunicator"
            if p.returncode != 2 or p.stderr.count(line) != 1 or expected not in p.stderr:
                fail("TESSERA_NCCL_FAIL_AT=%s: expected exit 2 and one error line saying %r\n%s"
                     % (spec, expected, show(p)))
            print("  TESSERA_NCCL_FAIL_AT=%s: exit 2, one line, %.1f s" % (spec, time.time() - start))

        expect_refused(opt, work, "mpi_backend", 2, cuda + ["parallel.dp=2", "parallel.backend=mpi"],
                       "parallel.backend: mpi cannot reach GPU memory")
    print("PASS")


if __name__ == "__main__":
    main()
