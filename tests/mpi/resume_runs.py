#!/usr/bin/env python3
"""Resuming from checkpoints: bit-identical in the same layout, equivalent in others.

  resume_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR] [--family gpt2|llama]

The model and data of layout_runs.py (20 steps):

  exact    under (dp, tp, pp) = (1, 1, 1) and (2, 2, 2): 20 steps straight, against 10
           steps (train.exit_after_step = 10, which checkpoints and stops) and a new
           process resuming from that checkpoint (checkpoint.resume) for the other 10:
           the losses and gradient norms of steps 11-20 are bit-identical. Again at
           (2, 2, 2) with checkpoint.async and a save every 2 steps in the first half.
  h5py     the (2, 2, 2) checkpoint of step 10, every logical tensor read with h5py through
           index.h5 at its full shape, is bit-identical to the parameters and moments of a
           single process that loaded it (which writes them as one whole piece each; read
           here from its rank file directly, not through an index).
  reshard  saved at step 10 under (2, 2, 1), (1, 2, 2) and (2, 1, 2), with and without
           ZeRO-1; each loaded under (1, 1, 1), (4, 1, 1), (1, 1, 2) and (2, 2, 2) (with
           ZeRO-1 the other way round where dp > 1, so its state is re-split both ways):
           the losses of steps 11-20 match the uninterrupted single process to a relative
           1e-5.

--family llama: the llama family of layout_runs.py (2 key/value heads, untied head), exact
under (2, 2, 2), and saved under (2, 2, 2) with ZeRO-1, loaded under (1, 1, 1), (1, 2, 1)
and (1, 1, 2) against its uninterrupted single process.

Standard library + numpy + h5py (through layout_runs). Exit code 0 = pass.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, series, close, parse_options  # noqa: E402
from layout_runs import LLAMA, prepare_data, train  # noqa: E402

HALF = 10


def losses(events, key="loss"):
    return series(events, "metric", key)


def resumed_from(events):
    return events[0].get("resumed_from", {})


def exact(opt, work, dp, tp, pp, first_extra=(), model=(), prefix=""):
    tag = prefix + "dp%d_tp%d_pp%d" % (dp, tp, pp) + ("_async" if first_extra else "")
    straight = train(opt, work, "straight_" + tag, dp, tp, pp, list(model))[0]
    first = train(opt, work, "first_" + tag, dp, tp, pp,
                  list(model) + ["train.exit_after_step=%d" % HALF] + list(first_extra))[0]
    saves = [e for e in first if e.get("event") == "checkpoint"]
    if first_extra and (len(saves) != HALF // 2 or not all(e.get("async") for e in saves) or
                        any(e.get("stall_seconds", -1) < 0 for e in saves)):
        fail("%s: expected %d asynchronous checkpoint events, got %s" % (tag, HALF // 2, saves))
    if [s for s, _ in losses(first)] != list(range(1, HALF + 1)):
        fail("%s: the first half ran steps %s" % (tag, [s for s, _ in losses(first)]))
    ckpt = os.path.join(work, "ckpt_first_" + tag)
    second = train(opt, work, "second_" + tag, dp, tp, pp, list(model) + ["checkpoint.resume=" + ckpt])[0]
    if resumed_from(second).get("step") != HALF:
        fail("%s: run_start says resumed_from %s" % (tag, resumed_from(second)))
    for key in ("loss", "grad_norm"):
        want = [v for s, v in losses(straight, key) if s > HALF]
        got = [v for s, v in losses(second, key)]
        if [s for s, _ in losses(second, key)] != list(range(HALF + 1, 21)) or got != want:
            fail("%s: %s of steps 11-20 differ after resuming:\n  straight %r\n  resumed  %r"
                 % (tag, key, want, got))
    print("  exact %s: steps 11-20 bit-identical after resuming" % tag, flush=True)


def h5py_reads_gathered(opt, work):
    import h5py
    import numpy as np
    sharded = os.path.join(work, "ckpt_first_dp2_tp2_pp2", "step_%06d" % HALF)
    train(opt, work, "gathered", 1, 1, 1, ["checkpoint.resume=" + sharded,
                                           "train.exit_after_step=%d" % HALF])
    single = os.path.join(work, "ckpt_gathered", "step_%06d" % HALF)
    with h5py.File(os.path.join(single, "rank_00000.h5"), "r") as f:
        whole = {p.attrs["tensor"].decode(): p[()] for p in f["pieces"].values()}
    with h5py.File(os.path.join(sharded, "index.h5"), "r") as f:
        names = sorted(f["tensors"])
        if names != sorted(whole):
            fail("h5py: tensors %s vs %s" % (names, sorted(whole)))
        shards = sorted(x for x in os.listdir(sharded) if x.startswith("rank_"))
        if len(shards) < 4:
            fail("h5py: the (2,2,2) checkpoint has only %s" % shards)
        for name in names:
            arr = f["tensors"][name][()]
            if arr.shape != whole[name].shape or arr.tobytes() != whole[name].tobytes():
                fail("h5py: %s read through the (2,2,2) index differs from one process's" % name)
    print("  h5py: %d tensors of the (2,2,2) checkpoint (%d shard files) equal the gathered ones"
          % (len(names), len(shards)), flush=True)


def reshard(opt, work, reference, saves=((2, 2, 1), (1, 2, 2), (2, 1, 2)), zeros=(0, 1),
            loads=((1, 1, 1), (4, 1, 1), (1, 1, 2), (2, 2, 2)), model=(), prefix=""):
    want = [(s, v) for s, v in losses(reference) if s > HALF]
    for save in saves:
        for zero in zeros:
            tag = prefix + "save_dp%d_tp%d_pp%d_zero%d" % (save + (zero,))
            train(opt, work, tag, *save,
                  list(model) + ["train.exit_after_step=%d" % HALF, "parallel.zero=%d" % zero])
            for load in loads:
                load_zero = 1 - zero if load[0] > 1 else 0
                name = "%s_load_dp%d_tp%d_pp%d_zero%d" % ((tag,) + load + (load_zero,))
                events = train(opt, work, name, *load,
                               list(model) + ["checkpoint.resume=" + os.path.join(work, "ckpt_" + tag),
                                              "parallel.zero=%d" % load_zero])[0]
                got = losses(events)
                if [s for s, _ in got] != [s for s, _ in want]:
                    fail("%s: ran steps %s" % (name, [s for s, _ in got]))
                for (step, a), (_, b) in zip(want, got):
                    if not close(a, b):
                        fail("%s: loss at step %d is %r, uninterrupted one process %r" % (name, step, b, a))
                print("  %s: steps 11-20 match one process" % name, flush=True)


def main():
    opt = parse_options(__doc__, lambda ap: ap.add_argument(
        "--family", default="gpt2", choices=["gpt2", "llama"]))
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_resume_") as work:
        prepare_data(opt, work)
        if opt.family == "llama":
            model = LLAMA + ["model.n_kv_head=2"]
            exact(opt, work, 2, 2, 2, model=model, prefix="llama_")
            reference = train(opt, work, "llama_reference", 1, 1, 1, model)[0]
            reshard(opt, work, reference, saves=((2, 2, 2),), zeros=(1,),
                    loads=((1, 1, 1), (1, 2, 1), (1, 1, 2)), model=model, prefix="llama_")
            print("PASS")
            return
        exact(opt, work, 1, 1, 1)
        exact(opt, work, 2, 2, 2)
        # Saved in the background every 2 steps while training went on.
        exact(opt, work, 2, 2, 2, ["checkpoint.async=true", "checkpoint.every=2"])
        h5py_reads_gathered(opt, work)
        reshard(opt, work, train(opt, work, "reference", 1, 1, 1, [])[0])
    print("PASS")


if __name__ == "__main__":
    main()
