#!/usr/bin/env python3
"""Failures under mpirun end the whole job with one clear message, never a hang.

  failure_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

Each impossible layout runs under mpirun with a timeout: the job must exit with code 2
within it (no hang), stderr must hold the expected message exactly once (each rank finds
the same problem before any communicator exists, and rank 0 alone prints it), nothing may
crash (no abort, terminate or segfault text) and there must be no MPI_ABORT banner (every
rank ends normally), and no run directory may be created. The rank-count mismatch
suggests `mpirun -n N`, or `srun -n N` / `sbatch --ntasks=N` in a Slurm job (SLURM_JOB_ID
set: the last case passes one to the ranks with mpirun -x). Then one rank of a running
(dp, pp) = (2, 2) job throws at step 3 (the TESSERA_TEST_FAIL_AT fault injection): the
other ranks, blocked in collectives or waiting for pipeline messages, must not hang; the
job ends non-zero with that rank's message, once (MPI_Abort: a rank-local failure).

Standard library only. Exit code 0 = pass.
"""
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import FORBIDDEN, fail, run, show, prepare_data, train_args, parse_options  # noqa: E402

TIMEOUT = 60
LAYOUT = r"parallel layout dp=\d+ x tp=\d+ x pp=\d+"

# How the rank-count message says to start N ranks: mpirun, or srun / sbatch in a Slurm
# job (this test may itself run inside one).
def start_hint(n):
    return (r"\(start it with (mpirun -n {0}|srun -n {0} or sbatch --ntasks={0},) or change "
            r"parallel\.dp/tp/pp\)").format(n)


# (name, ranks, --set values, pattern of the error message after "tessera: error: ",
#  extra mpirun options)
INVALID = [
    ("world_mismatch", 2, ["parallel.dp=1"],
     LAYOUT + r" = 1 rank, but the job has 2 MPI ranks " + start_hint(1), []),
    ("world_mismatch_under_slurm", 2, ["parallel.dp=1"],
     LAYOUT + r" = 1 rank, but the job has 2 MPI ranks \(start it with srun -n 1 or "
              r"sbatch --ntasks=1, or change parallel\.dp/tp/pp\)", ["-x", "SLURM_JOB_ID=4242"]),
    ("heads_not_divisible_by_tp", 2, ["parallel.tp=2", "model.n_head=3", "model.n_embd=48"],
     LAYOUT + r": model\.n_head = 3 is not divisible by parallel\.tp = 2 \(attention heads are "
              r"split across tensor-parallel ranks\)", []),
    ("fewer_layers_than_stages", 4, ["parallel.pp=4", "model.n_layer=2"],
     LAYOUT + r": model\.n_layer = 2 is fewer than parallel\.pp = 4 pipeline stages \(every "
              r"stage needs at least one layer\)", []),
    ("batch_not_divisible", 2, ["parallel.dp=2", "train.global_batch=6", "train.micro_batch=2"],
     r".*tiny\.yaml: train\.global_batch 6 is not divisible by parallel\.dp \* "
     r"train\.micro_batch = 4 \(2 \* 2\)", []),
    ("stage_layers_wrong_sum", 2, ["parallel.pp=2", "model.n_layer=4", "parallel.stage_layers=3,2"],
     r".*tiny\.yaml: parallel\.stage_layers: '3,2' must list parallel\.pp = 2 layer counts, each "
     r">= 1, summing to model\.n_layer = 4", []),
]


def check_failure(name, p, pattern, aborts):
    """The job failed with `pattern` on stderr exactly once; when not `aborts` (an error
    every rank raised), with exit code 2 and no MPI_ABORT text at all. (Open MPI's banner
    after an MPI_Abort is not checked: its show_help sometimes fails to print it.)"""
    if p.returncode == 0:
        fail("%s: the job succeeded\n%s" % (name, show(p)))
    lines = [l for l in p.stderr.splitlines() if l.startswith("tessera: ")]
    if not lines:
        fail("%s: no 'tessera:' line\n%s" % (name, show(p)))
    for line in lines:
        if not re.fullmatch("tessera: error: " + pattern, line):
            fail("%s: unexpected error line %r (expected %r)" % (name, line, pattern))
    if len(lines) != 1:
        fail("%s: the message appears %d times, not once\n%s" % (name, len(lines), show(p)))
    for bad in FORBIDDEN:
        if bad in p.stderr or bad in p.stdout:
            fail("%s: output contains %r\n%s" % (name, bad, show(p)))
    if not aborts and ("MPI_ABORT" in p.stderr or "MPI_ABORT" in p.stdout):
        fail("%s: MPI_ABORT banner for an error every rank raised\n%s" % (name, show(p)))
    if not aborts and p.returncode != 2:
        fail("%s: exit code %d, expected 2\n%s" % (name, p.returncode, show(p)))
    print("  %s: exit %d, %d x %r" % (name, p.returncode, len(lines), lines[0]), flush=True)


def main():
    opt = parse_options(__doc__)
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_fail_") as work:
        prepare_data(opt.tessera, work)
        for name, ranks, sets, pattern, mpirun_options in INVALID:
            args = train_args(opt.tessera, opt.source_dir, work, name, sets)
            p = run([opt.mpirun, "-n", str(ranks)] + mpirun_options + args, work, TIMEOUT)
            check_failure(name, p, pattern, aborts=False)
            runs = os.path.join(work, "runs_" + name)
            if os.path.isdir(runs) and os.listdir(runs):
                fail("%s: a run directory was created although the layout was refused" % name)

        # One rank throws in the middle of a run (rank 1: not the one writing the log).
        name = "rank1_throws_at_step3"
        args = train_args(opt.tessera, opt.source_dir, work, name,
                          ["parallel.dp=2", "parallel.pp=2", "model.n_layer=2", "train.steps=6"])
        os.environ["TESSERA_TEST_FAIL_AT"] = "1:3"
        p = run([opt.mpirun, "-n", "4"] + args, work, TIMEOUT)
        del os.environ["TESSERA_TEST_FAIL_AT"]
        check_failure(name, p, r"injected failure on rank 1 at step 3 \(TESSERA_TEST_FAIL_AT\)",
                      aborts=True)
        if "step     2/6" not in p.stdout or "step     3/6" in p.stdout:
            fail("%s: expected steps 1-2 to run and step 3 not to finish\n%s" % (name, show(p)))
    print("PASS")


if __name__ == "__main__":
    main()
