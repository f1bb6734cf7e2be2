#!/usr/bin/env python3
"""ZeRO-1 runs of `tessera train` (parallel.zero = 1), run by ctest (tests/CMakeLists.txt).

  zero_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

The tiny recipe of tp_runs.py (20 steps) with ZeRO-1 at (dp, tp) = (2, 1), (4, 1), (2, 2)
gives the same per-step training losses and grad norms, and the same validation losses,
as the single-process run, to a relative 1e-5. And the checkpoint a ZeRO-1 run writes
(each dp rank writes the moments of its own range) holds the tensors a plain
data-parallel run writes: with clipping off (the norm's summation order then cannot
matter) every logical tensor read through index.h5 with h5py, parameters and AdamW
moments, is bit-identical between zero = 0 and zero = 1 at dp = 2, and the zero = 1
checkpoint has one shard file per dp rank.

Standard library, numpy and h5py. Exit code 0 = pass; anything else prints why.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, series, prepare_data, parse_options  # noqa: E402
from tp_runs import train, check  # noqa: E402

STEPS = 20


def checkpoint_tensors(work, name):
    """Every logical tensor of the run's last checkpoint, read through index.h5, and the
    checkpoint's shard files."""
    import h5py
    root = os.path.join(work, "ckpt_" + name)
    with open(os.path.join(root, "latest")) as f:
        step_dir = os.path.join(root, f.read().strip())
    with h5py.File(os.path.join(step_dir, "index.h5"), "r") as f:
        tensors = {k: f["tensors"][k][()] for k in f["tensors"]}
    return tensors, sorted(x for x in os.listdir(step_dir) if x.startswith("rank_"))


def main():
    opt = parse_options(__doc__)
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_zero_") as work:
        prepare_data(opt.tessera, work)
        ref = train(opt, work, "dp1_tp1", 1, 1)
        if len(series(ref[0], "metric", "loss")) != STEPS:
            fail("dp1_tp1: expected %d metric lines" % STEPS)
        for dp, tp in ((2, 1), (4, 1), (2, 2)):
            name = "zero_dp%d_tp%d" % (dp, tp)
            check(name, ref, train(opt, work, name, dp, tp, ["parallel.zero=1"]), same_prompt=False)
        # The checkpoint: identical tensors with and without ZeRO-1 (clipping off).
        noclip = ["optim.grad_clip=0"]
        train(opt, work, "noclip_dp2", 2, 1, noclip)
        train(opt, work, "noclip_zero_dp2", 2, 1, noclip + ["parallel.zero=1"])
        plain, plain_files = checkpoint_tensors(work, "noclip_dp2")
        zero, zero_files = checkpoint_tensors(work, "noclip_zero_dp2")
        if plain_files != ["rank_00000.h5"] or zero_files != ["rank_00000.h5", "rank_00001.h5"]:
            fail("shard files: %s without ZeRO-1, %s with" % (plain_files, zero_files))
        if sorted(plain) != sorted(zero):
            fail("checkpoint tensors differ: %s vs %s" % (sorted(plain), sorted(zero)))
        if not any(k.endswith(".adam_m") for k in plain):
            fail("checkpoint has no .adam_m tensors: %s" % sorted(plain))
        bad = [k for k in plain if plain[k].tobytes() != zero[k].tobytes()]
        if bad:
            fail("checkpoint tensors differ between zero=0 and zero=1 at dp=2: %s" % bad)
        print("  checkpoint: %d tensors identical with and without ZeRO-1" % len(plain))
    print("PASS")


if __name__ == "__main__":
    main()
