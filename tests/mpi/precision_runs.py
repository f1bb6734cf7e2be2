#!/usr/bin/env python3
"""Mixed precision under MPI: bf16 and fp16 track fp32; fp16 overflow handling on every rank.

  precision_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR] [--only PART]

PART tracks: a small model (4 layers, 64 wide, 32 tokens; global batch 8) trains 200
steps on real text in fp32, bf16 and fp16, each under (dp, tp, pp) = (1, 1, 1) and
(2, 2, 2) (8 ranks). Every bf16 and fp16 run tracks the one-process fp32 run: its final
validation loss and its mean training loss over the last 10 steps are within 2 %, and
every validation loss on the way within 3 %.

PART grad-reduce: parallel.grad_reduce=bf16 (data-parallel gradients all-reduced with bf16
on the wire) under (dp, tp, pp) = (2, 1, 1) and (2, 2, 2) trains the 200 steps of PART
tracks: each final validation loss is within 2 % of the one-process fp32 run's, and the
training losses are not fp32's (the rounding happened: dp=2 in fp32 matches one process
to 1e-5, dp_runs.py).

PART overflow: fp16 with an initial loss scale of 2^40 overflows (inf in the rounded
gradients) until the scale has come down:
  - after 3 steps (train.exit_after_step) under (1, 1, 1) and (2, 2, 2), every AdamW
    moment in the checkpoint, every rank's pieces, is exactly 0 (no update ran on any
    rank), the parameters are the initial ones (those of an fp32 run with lr 1e-30),
    the run log marks the 3 steps skipped at scales 2^40, 2^39, 2^38, and the checkpoint
    records scale 2^37 and 3 skipped steps;
  - a run resumed from that checkpoint starts at scale 2^37;
  - 60 steps from 2^40 with a window of 10: the log follows the rule (a skipped step
    halves the scale, 10 good steps in a row double it) at every step; at least 10 steps
    are skipped first, then at least 3/4 of the rest apply, the scale doubles at least
    once, and the loss falls; (2, 2, 2) skips exactly the first steps of (1, 1, 1), at
    exactly its scales, up to the first good step (later overflows are decided by
    gradients at fp16's edge, which the layouts' summation orders may round either way).

PART tiny-recipe (on request only, about 5 minutes): recipes/tiny.yaml itself, 200 steps,
in each precision under (1, 1, 1) and (2, 2, 2), within 2 % of fp32 at the end.

Standard library + numpy + h5py. Exit code 0 = pass.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, run, show, read_log, series, parse_options, recipe_args  # noqa: E402
from layout_runs import prepare_data, checkpoint_tensors  # noqa: E402

import numpy as np  # noqa: E402
import h5py  # noqa: E402

LAYOUTS = [(1, 1, 1), (2, 2, 2)]
GRAD_REDUCE_LAYOUTS = [(2, 1, 1), (2, 2, 2)]


def train(opt, work, name, layout, extra, expect_ok=True):
    dp, tp, pp = layout
    n = dp * tp * pp
    sets = [
        "model.n_layer=4", "model.n_head=4", "model.n_embd=64", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.global_batch=8", "train.micro_batch=2", "train.eval_batches=2",
        "train.sample_tokens=0", "optim.warmup_steps=10", "log.every=1",
        "parallel.dp=%d" % dp, "parallel.tp=%d" % tp, "parallel.pp=%d" % pp,
    ] + list(extra)
    args = recipe_args(opt.tessera, opt.source_dir, work, name, sets)
    p = run(([opt.mpirun, "-n", str(n)] if n > 1 else []) + args, work, 240)
    if expect_ok and p.returncode != 0:
        fail("%s run failed\n%s" % (name, show(p)))
    return read_log(work, name)


def within(name, what, got, want, tol):
    rel = abs(got - want) / abs(want)
    if rel > tol:
        fail("%s: %s %.5f is %.2f%% from fp32's %.5f (tolerance %.0f%%)"
             % (name, what, got, 100 * rel, want, 100 * tol))
    return rel


def tracks(opt, work):
    steps = ["train.steps=200", "train.eval_every=50"]
    ref = train(opt, work, "fp32_111", (1, 1, 1), steps)
    ref_val = series(ref, "eval", "val_loss")
    ref_tail = np.mean([v for _, v in series(ref, "metric", "loss")[-10:]])
    if [s for s, _ in ref_val] != [50, 100, 150, 200]:
        fail("fp32 reference: eval steps %s" % [s for s, _ in ref_val])
    for precision in ("fp32", "bf16", "fp16"):
        for layout in LAYOUTS:
            name = "%s_%d%d%d" % ((precision,) + layout)
            if name == "fp32_111":
                continue
            events = train(opt, work, name, layout, steps + ["train.precision=" + precision])
            val = series(events, "eval", "val_loss")
            for (step, v), (_, want) in zip(val, ref_val):
                within(name, "validation loss at step %d" % step, v, want, 0.03)
            final = within(name, "final validation loss", val[-1][1], ref_val[-1][1], 0.02)
            tail = np.mean([v for _, v in series(events, "metric", "loss")[-10:]])
            within(name, "mean training loss of the last 10 steps", tail, ref_tail, 0.02)
            print("  %s: final validation loss %.4f vs fp32 %.4f (%.2f%%)"
                  % (name, val[-1][1], ref_val[-1][1], 100 * final), flush=True)


def grad_reduce(opt, work):
    steps = ["train.steps=200", "train.eval_every=200"]
    ref = train(opt, work, "fp32_111_ref", (1, 1, 1), steps)
    want = [v for _, v in series(ref, "metric", "loss")]
    for layout in GRAD_REDUCE_LAYOUTS:
        name = "grad_reduce_bf16_%d%d%d" % layout
        events = train(opt, work, name, layout, steps + ["parallel.grad_reduce=bf16"])
        val, ref_val = series(events, "eval", "val_loss")[-1][1], series(ref, "eval", "val_loss")[-1][1]
        final = within(name, "final validation loss", val, ref_val, 0.02)
        got = [v for _, v in series(events, "metric", "loss")]
        if len(got) != 200 or max(abs(a - b) / abs(b) for a, b in zip(got, want)) < 1e-4:
            fail("%s: %d training losses, all within 1e-4 of fp32's: was bf16 used?"
                 % (name, len(got)))
        print("  %s: final validation loss %.4f vs fp32 %.4f (%.2f%%)"
              % (name, val, ref_val, 100 * final), flush=True)


def checkpoint_extra(work, name):
    """/meta/extra_json of the run's last checkpoint."""
    root = os.path.join(work, "ckpt_" + name)
    with open(os.path.join(root, "latest")) as f:
        step_dir = os.path.join(root, f.read().strip())
    with h5py.File(os.path.join(step_dir, "index.h5"), "r") as f:
        text = f["meta/extra_json"][()]
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def scale_events(events):
    return [(e["step"], e["loss_scale"], e["skipped"]) for e in events if e.get("event") == "metric"]


def overflow(opt, work):
    forced = ["train.precision=fp16", "train.loss_scale=%d" % 2 ** 40, "train.steps=60",
              "train.eval_every=0"]
    # The initial parameters: fp32 with a learning rate that cannot move a float.
    train(opt, work, "init", (1, 1, 1), ["train.steps=60", "train.eval_every=0",
                                          "train.exit_after_step=3", "optim.lr=1e-30",
                                          "optim.min_lr=0"])
    initial, _ = checkpoint_tensors(work, "init")
    runs = {}
    for layout in LAYOUTS:
        name = "overflow3_%d%d%d" % layout
        events = train(opt, work, name, layout, forced + ["train.exit_after_step=3"])
        seen = scale_events(events)
        want = [(1, 2.0 ** 40, True), (2, 2.0 ** 39, True), (3, 2.0 ** 38, True)]
        if seen != want:
            fail("%s: (step, loss scale, skipped) %s, expected %s" % (name, seen, want))
        tensors, shards = checkpoint_tensors(work, name)
        moments = [k for k in tensors if k.endswith((".adam_m", ".adam_v"))]
        if not moments or any(np.any(tensors[k] != 0) for k in moments):
            fail("%s: an AdamW moment is not 0 after 3 skipped steps" % name)
        for k, v in tensors.items():
            if k in moments:
                continue
            if not np.allclose(v, initial[k], rtol=0, atol=1e-20):
                fail("%s: %s moved during skipped steps" % (name, k))
        scaler = checkpoint_extra(work, name).get("loss_scaler", {})
        if scaler.get("scale") != 2.0 ** 37 or scaler.get("skipped_steps") != 3:
            fail("%s: checkpoint records loss scaler %s" % (name, scaler))
        print("  %s: 3 steps skipped at scales 2^40..2^38 on all %d shard(s): moments 0, "
              "parameters initial; checkpoint scale 2^37" % (name, len(shards)), flush=True)
    # Resuming restores the scale.
    name = "overflow_resumed"
    root = os.path.join(work, "ckpt_overflow3_111")
    events = train(opt, work, name, (1, 1, 1), forced + ["train.exit_after_step=4",
                                                         "checkpoint.resume=" + root])
    first = scale_events(events)[0]
    if first[:2] != (4, 2.0 ** 37):
        fail("%s: resumed at (step, scale) %s, expected (4, 2^37)" % (name, first[:2]))
    print("  resumed from step 3 at scale 2^37", flush=True)
    # The whole dynamic, and the same on 8 ranks as on one.
    for layout in LAYOUTS:
        name = "overflow60_%d%d%d" % layout
        events = train(opt, work, name, layout, forced + ["train.loss_scale_window=10"])
        seen = scale_events(events)
        scale, good = 2.0 ** 40, 0
        for step, s, skipped in seen:  # the rule, replayed
            if s != scale:
                fail("%s: step %d ran at scale %g, the rule gives %g" % (name, step, s, scale))
            if skipped:
                scale, good = scale / 2, 0
            else:
                good += 1
                if good == 10:
                    scale, good = scale * 2, 0
        first_good = next(i for i, (_, _, skipped) in enumerate(seen) if not skipped)
        later = seen[first_good:]
        grew = any(b[1] > a[1] for a, b in zip(seen, seen[1:]))
        if first_good < 10 or sum(sk for _, _, sk in later) > len(later) // 4 or not grew:
            fail("%s: expected at least 10 skipped steps first, then mostly good ones and the "
                 "scale doubling at least once: %s" % (name, seen))
        losses = [v for _, v in series(events, "metric", "loss")]
        if not np.mean(losses[-5:]) < np.mean(losses[first_good:first_good + 5]) - 0.1:
            fail("%s: the loss did not fall after the scale recovered: %s" % (name, losses))
        runs[layout] = seen[:first_good + 1]
        print("  %s: %d steps skipped first (2^40 down to %g), then %d of %d steps applied; "
              "last scale %g" % (name, first_good, later[0][1],
                                 len(later) - sum(sk for _, _, sk in later), len(later),
                                 seen[-1][1]), flush=True)
    # The forced phase is the same on 8 ranks as on one. Later overflows are decided by
    # gradients near fp16's largest value, where the layouts' different fp32 summation
    # orders can fall on either side: each run follows the rule, but not necessarily at
    # the same steps.
    if runs[(1, 1, 1)] != runs[(2, 2, 2)]:
        fail("the forced overflows differ between (1,1,1) and (2,2,2):\n%s\n%s"
             % (runs[(1, 1, 1)], runs[(2, 2, 2)]))


def tiny_recipe(opt, work):
    """recipes/tiny.yaml as written (4 layers, 128 wide, 64 tokens, global batch 32) on the
    whole bundled corpus, 200 steps, in each precision under (1,1,1) and (2,2,2): the final
    validation loss and the mean training loss of the last 10 steps within 2 % of fp32's
    one process. About 5 minutes on 2 cores, so not part of ctest's default parts."""
    data = os.path.join(work, "kjv")
    p = run([opt.tessera, "data", "prepare", "--input",
             os.path.join(opt.source_dir, "data", "corpus", "kjv-genesis-exodus.txt"),
             "--out", data, "--tokenizer", "bytes"], work, 120)
    if p.returncode != 0:
        fail("data prepare failed\n" + show(p))
    results = {}
    for precision in ("fp32", "bf16", "fp16"):
        for dp, tp, pp in LAYOUTS:
            name = "tiny_%s_%d%d%d" % (precision, dp, tp, pp)
            n = dp * tp * pp
            args = recipe_args(opt.tessera, opt.source_dir, work, name, [
                "data.train=" + os.path.join(data, "train_*.bin"),
                "data.val=" + os.path.join(data, "val_*.bin"), "train.steps=200",
                "train.eval_every=200", "train.sample_tokens=0", "log.every=1",
                "train.precision=" + precision, "parallel.dp=%d" % dp, "parallel.tp=%d" % tp,
                "parallel.pp=%d" % pp])
            p = run(([opt.mpirun, "-n", str(n)] if n > 1 else []) + args, work, 900)
            if p.returncode != 0:
                fail("%s run failed\n%s" % (name, show(p)))
            events = read_log(work, name)
            results[name] = (series(events, "eval", "val_loss")[-1][1],
                             np.mean([v for _, v in series(events, "metric", "loss")[-10:]]))
    ref_val, ref_tail = results["tiny_fp32_111"]
    for name, (val, tail) in results.items():
        rel = within(name, "final validation loss", val, ref_val, 0.02)
        within(name, "mean training loss of the last 10 steps", tail, ref_tail, 0.02)
        print("  %s: final validation loss %.4f vs fp32 %.4f (%.2f%%); last-10 training loss "
              "%.4f vs %.4f" % (name, val, ref_val, 100 * rel, tail, ref_tail), flush=True)


def main():
    opt = parse_options(__doc__, lambda ap: ap.add_argument(
        "--only", default="", help="comma-separated: tracks, grad-reduce, overflow, tiny-recipe "
                                   "(default: all but tiny-recipe)"))
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_precision_") as work:
        prepare_data(opt, work)
        parts = opt.only.split(",") if opt.only else ["tracks", "grad-reduce", "overflow"]
        for part, fn in (("tracks", tracks), ("grad-reduce", grad_reduce), ("overflow", overflow),
                         ("tiny-recipe", tiny_recipe)):
            if part in parts:
                fn(opt, work)
    print("PASS")


if __name__ == "__main__":
    main()
