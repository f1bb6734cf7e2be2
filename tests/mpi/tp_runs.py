#!/usr/bin/env python3
"""Tensor-parallel runs of `tessera train`, run by ctest (tests/CMakeLists.txt).

  tp_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

The tiny recipe (2 layers, 32 wide, 4 heads, 32 tokens, global batch 8, 20 steps) gives
the same per-step training losses and grad norms, and the same validation losses, under
(dp, tp) = (1, 2), (1, 4), (2, 2) as in one process (1, 1), to a relative 1e-5; and a
vocabulary not divisible by tp (255 at tp = 2, 3 extra rows of local padding with
vocab_pad_to = 1) trains and matches its tp = 1 run. It also runs the greedy sample
under tp (the logits are sharded) and checks it equals tp = 1's (at dp = 1, where the
prompt, rank 0's last micro-batch, is the same).

Standard library only. Exit code 0 = pass; anything else prints why.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_runs  # noqa: E402  (shared helpers: run, prepare_data, read_log, ...)
from dp_runs import fail, run, show, prepare_data, read_log, series, close, parse_options, recipe_args  # noqa: E402

STEPS = 20


def args_for(opt, work, name, sets):
    base = [
        "model.n_layer=2", "model.n_head=4", "model.n_embd=32", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.steps=%d" % STEPS, "train.global_batch=8", "train.micro_batch=2",
        "train.eval_every=10", "train.eval_batches=1", "train.sample_tokens=8",
        "optim.warmup_steps=2", "log.every=1",
    ]
    return recipe_args(opt.tessera, opt.source_dir, work, name, base + sets)


def train(opt, work, name, dp, tp, extra=()):
    n = dp * tp
    cmd = ([opt.mpirun, "-n", str(n)] if n > 1 else []) + args_for(
        opt, work, name, ["parallel.dp=%d" % dp, "parallel.tp=%d" % tp] + list(extra))
    p = run(cmd, work, 120)
    if p.returncode != 0:
        fail("%s run failed\n%s" % (name, show(p)))
    events = read_log(work, name)
    layout = events[0].get("layout", {})
    if layout.get("dp") != dp or layout.get("tp") != tp or layout.get("world") != n:
        fail("%s: run_start layout is %s" % (name, layout))
    return events, p.stdout[p.stdout.find("sample (greedy"):]


def compare(name, key, ref, got):
    if [s for s, _ in ref] != [s for s, _ in got] or len(ref) == 0:
        fail("%s %s: steps differ: %s vs %s" % (name, key, [s for s, _ in ref], [s for s, _ in got]))
    for (step, a), (_, b) in zip(ref, got):
        if a is None or b is None or not close(a, b):
            fail("%s at step %d: %s is %r at tp=1 and %r here (relative tolerance %g)"
                 % (name, step, key, a, b, dp_runs.REL_TOL))
    print("  %s: %s agrees at %d steps" % (name, key, len(ref)))


def check(name, ref, got, same_prompt=True):
    (ref_events, ref_sample), (events, sample) = ref, got
    compare(name, "loss", series(ref_events, "metric", "loss"), series(events, "metric", "loss"))
    compare(name, "grad_norm", series(ref_events, "metric", "grad_norm"),
            series(events, "metric", "grad_norm"))
    compare(name, "val_loss", series(ref_events, "eval", "val_loss"), series(events, "eval", "val_loss"))
    # The prompt is rank 0's last micro-batch, which depends on dp (not on tp).
    if same_prompt and sample != ref_sample:
        fail("%s: greedy sample differs:\n%r\nvs tp=1:\n%r" % (name, sample, ref_sample))


def main():
    opt = parse_options(__doc__)
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_tp_") as work:
        prepare_data(opt.tessera, work)
        ref = train(opt, work, "dp1_tp1", 1, 1)
        if len(series(ref[0], "metric", "loss")) != STEPS:
            fail("dp1_tp1: expected %d metric lines" % STEPS)
        for dp, tp in ((1, 2), (1, 4), (2, 2)):
            name = "dp%d_tp%d" % (dp, tp)
            check(name, ref, train(opt, work, name, dp, tp), same_prompt=dp == 1)
        odd = ["model.vocab_size=255", "model.vocab_pad_to=1"]
        ref255 = train(opt, work, "v255_tp1", 1, 1, odd)
        check("v255_tp2", ref255, train(opt, work, "v255_tp2", 1, 2, odd))
    print("PASS")


if __name__ == "__main__":
    main()
