#!/usr/bin/env python3
"""ZeRO-1 runs of `tessera train` (parallel.zero = 1), run by ctest (tests/CMakeLists.txt).

  zero_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

The tiny recipe of tp_runs.py (20 steps) with ZeRO-1 at (dp, tp) = (2, 1), (4, 1), (2, 2)
gives the same per-step training losses and grad norms, and the same validation losses,
as the single-process run, to a relative 1e-5. And the checkpoint a ZeRO-1 run writes
(moments gathered over dp) is the one a plain data-parallel run writes: with clipping
off (the norm's summation order then cannot matter) every tensor's checksum in the run
log, parameters and AdamW moments, is identical between zero = 0 and zero = 1 at dp = 2.

Standard library only. Exit code 0 = pass; anything else prints why.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, series, prepare_data, parse_options  # noqa: E402
from tp_runs import train, check  # noqa: E402

STEPS = 20


def checksums(events, name):
    ck = [e for e in events if e.get("event") == "checkpoint"]
    if not ck or not ck[-1].get("checksums"):
        fail("%s: no checkpoint with checksums in the run log" % name)
    return ck[-1]["checksums"]


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
        plain = checksums(train(opt, work, "noclip_dp2", 2, 1, noclip)[0], "noclip_dp2")
        zero = checksums(train(opt, work, "noclip_zero_dp2", 2, 1, noclip + ["parallel.zero=1"])[0],
                         "noclip_zero_dp2")
        if sorted(plain) != sorted(zero):
            fail("checkpoint tensors differ: %s vs %s" % (sorted(plain), sorted(zero)))
        if not any(k.endswith(".adam_m") for k in plain):
            fail("checkpoint has no .adam_m tensors: %s" % sorted(plain))
        bad = [k for k in plain if plain[k] != zero[k]]
        if bad:
            fail("checkpoint tensors differ between zero=0 and zero=1 at dp=2: %s" % bad)
        print("  checkpoint: %d tensors identical with and without ZeRO-1" % len(plain))
    print("PASS")


if __name__ == "__main__":
    main()
