#!/usr/bin/env python3
"""Every parallel layout reproduces the single process, step by step.

  layout_runs.py --tessera BIN --mpirun MPIRUN [--source-dir DIR] [--only NAME]
                 [--family gpt2|llama]

A tiny model (4 layers, 4 heads, 32 wide, 32 tokens; global batch 8 in micro-batches of 1)
trains 20 steps under every (dp, tp, pp) layout in LAYOUTS below, with and without ZeRO-1
(where dp > 1) and with GPipe and 1F1B (where pp > 1), 23 runs in all, plus a vocabulary
not divisible by tp (255 at tp = 2, pp = 1 and 2). Each run must match the single process
(1, 1, 1) to a relative 1e-5:

  - the training loss and the gradient norm at every step, the validation losses;
  - the greedy sample printed at the end (at dp = 1, where the prompt is the same);
  - the final parameters, read from each run's checkpoint with h5py: the relative L2
    difference of all logical parameters together (||a - b|| / ||a||) <= 1e-5, and of
    every tensor on its own <= 1e-4 (a misplaced or wrongly summed tensor differs by
    O(1)).

Why not 1e-5 per tensor: AdamW divides each gradient element by its own RMS, so an
element whose gradient is near zero at some step (the key part of every QKV bias has an
exactly zero gradient in exact arithmetic: softmax ignores a constant added to all
scores of a query) moves by up to the learning rate on rounding noise alone, and
different summation orders give different noise. Two micro-batch splittings of one
process differ the same way (2e-5 per tensor in the QKV biases after 20 steps), while
the whole model stays within 1e-6.

Last, with clipping off, a ZeRO-1 run's checkpoint holds bit for bit the tensors
(parameters and moments) of a plain data-parallel run's, at dp = 2.

--family llama runs the llama family instead (SwiGLU width 64, untied LM head), each
against its own one-process run: grouped-query attention with 2 key/value heads for the 4
query heads under (1,2,1), (2,2,1), (1,1,2) with GPipe and 1F1B, (2,1,1) with ZeRO-1 and
(2,2,2); one key/value head (not splittable over tp) under (2,1,1) with ZeRO-1 and
(1,1,2); as many key/value heads as query heads under (1,4,1) and (2,2,2).

Standard library + numpy + h5py (python3-h5py). Exit code 0 = pass.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dp_runs import fail, run, show, read_log, series, close, parse_options, recipe_args  # noqa: E402

import numpy as np  # noqa: E402
import h5py  # noqa: E402

STEPS = 20
REL_TOL = 1e-5

LAYOUTS = [(1, 1, 1), (2, 1, 1), (4, 1, 1), (1, 2, 1), (1, 4, 1), (1, 1, 2), (1, 1, 4),
           (2, 2, 1), (2, 1, 2), (1, 2, 2), (2, 2, 2)]


def variants():
    """(name, dp, tp, pp, extra --set values) of every run, the reference first."""
    out = []
    for dp, tp, pp in LAYOUTS:
        for zero in ((0, 1) if dp > 1 else (0,)):
            for schedule in (("gpipe", "1f1b") if pp > 1 else ("1f1b",)):
                name = "dp%d_tp%d_pp%d_zero%d_%s" % (dp, tp, pp, zero, schedule)
                out.append((name, dp, tp, pp, ["parallel.zero=%d" % zero,
                                                "parallel.schedule=" + schedule]))
    # The runs above sum gradients in shared memory (every dp rank is on this node); these
    # sum them with the ring over MPI messages instead.
    for dp, tp, pp, zero in ((2, 1, 1, 0), (2, 2, 2, 1)):
        out.append(("dp%d_tp%d_pp%d_zero%d_ring" % (dp, tp, pp, zero), dp, tp, pp,
                    ["parallel.zero=%d" % zero, "parallel.shared_memory=false"]))
    return out


LLAMA = ["model.family=llama", "model.intermediate_size=64"]
LLAMA_GROUPS = [  # (key/value heads, [(dp, tp, pp, zero, schedule)])
    (2, [(1, 2, 1, 0, "1f1b"), (2, 2, 1, 0, "1f1b"), (1, 1, 2, 0, "gpipe"), (1, 1, 2, 0, "1f1b"),
         (2, 1, 1, 1, "1f1b"), (2, 2, 2, 0, "1f1b")]),
    (1, [(2, 1, 1, 1, "1f1b"), (1, 1, 2, 0, "1f1b")]),
    (4, [(1, 4, 1, 0, "1f1b"), (2, 2, 2, 1, "gpipe")]),
]


def llama_layouts(opt, work):
    for kv, layouts in LLAMA_GROUPS:
        sets = LLAMA + ["model.n_kv_head=%d" % kv]
        ref = train(opt, work, "llama_kv%d_ref" % kv, 1, 1, 1, sets)
        for dp, tp, pp, zero, schedule in layouts:
            name = "llama_kv%d_dp%d_tp%d_pp%d_zero%d_%s" % (kv, dp, tp, pp, zero, schedule)
            if opt.only in name:
                check(name, ref, train(opt, work, name, dp, tp, pp, sets + [
                    "parallel.zero=%d" % zero, "parallel.schedule=" + schedule]))


def prepare_data(opt, work):
    """Bytes of the first 60 KB of the bundled corpus. Real text, not a repeated sentence:
    a model that has learnt a periodic corpus has near-zero gradients, which AdamW
    normalises, so rounding differences between summation orders grow (relative 1e-4 in
    the gradient norm between micro-batch splittings of one process)."""
    corpus = os.path.join(work, "corpus.txt")
    with open(os.path.join(opt.source_dir, "data", "corpus", "kjv-genesis-exodus.txt")) as f:
        text = f.read(60000)
    with open(corpus, "w") as f:
        f.write(text)
    p = run([opt.tessera, "data", "prepare", "--input", corpus, "--out",
             os.path.join(work, "data"), "--tokenizer", "bytes"], work, 60)
    if p.returncode != 0:
        fail("data prepare failed\n" + show(p))


def train(opt, work, name, dp, tp, pp, extra):
    n = dp * tp * pp
    sets = [
        "model.n_layer=4", "model.n_head=4", "model.n_embd=32", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.steps=%d" % STEPS, "train.global_batch=8", "train.micro_batch=1",
        "train.eval_every=10", "train.eval_batches=1", "train.sample_tokens=8",
        "optim.warmup_steps=2", "log.every=1",
        "parallel.dp=%d" % dp, "parallel.tp=%d" % tp, "parallel.pp=%d" % pp,
    ] + list(extra)
    args = recipe_args(opt.tessera, opt.source_dir, work, name, sets)
    p = run(([opt.mpirun, "-n", str(n)] if n > 1 else []) + args, work, 180)
    if p.returncode != 0:
        fail("%s run failed\n%s" % (name, show(p)))
    events = read_log(work, name)
    layout = events[0].get("layout", {})
    if (layout.get("dp"), layout.get("tp"), layout.get("pp"), layout.get("world")) != (dp, tp, pp, n):
        fail("%s: run_start layout is %s" % (name, layout))
    sync = "none" if dp == 1 else "ring" if "parallel.shared_memory=false" in extra else "shared memory"
    if layout.get("grad_sync") != sync:
        fail("%s: run_start layout.grad_sync is %r, expected %r" % (name, layout.get("grad_sync"), sync))
    return events, final_params(work, name), p.stdout[p.stdout.find("sample (greedy"):]


def final_params(work, name):
    latest = os.path.join(work, "ckpt_" + name, "latest")
    with open(latest) as f:
        step_dir = os.path.join(work, "ckpt_" + name, f.read().strip())
    with h5py.File(os.path.join(step_dir, "index.h5"), "r") as f:
        return {k: f["tensors"][k][()] for k in f["tensors"] if not k.endswith((".adam_m", ".adam_v"))}


def compare_series(name, key, ref, got, tol=REL_TOL):
    if [s for s, _ in ref] != [s for s, _ in got] or not ref:
        fail("%s %s: steps differ: %s vs %s" % (name, key, [s for s, _ in ref], [s for s, _ in got]))
    for (step, a), (_, b) in zip(ref, got):
        if a is None or b is None or abs(a - b) > tol * max(abs(a), abs(b)):
            fail("%s at step %d: %s is %r in one process and %r here (relative tolerance %g)"
                 % (name, step, key, a, b, tol))


def compare_params(name, ref, got):
    if sorted(ref) != sorted(got):
        fail("%s: checkpoint tensors differ: %s" % (name, sorted(set(ref) ^ set(got))))
    diff2 = norm2 = 0.0
    worst = (0.0, "")
    for k in ref:
        a, b = ref[k].astype(np.float64), got[k].astype(np.float64)
        if a.shape != b.shape:
            fail("%s: %s has shape %s, reference %s" % (name, k, b.shape, a.shape))
        d2, n2 = float(np.sum((a - b) ** 2)), float(np.sum(a ** 2))
        diff2, norm2 = diff2 + d2, norm2 + n2
        rel = (d2 / max(n2, 1e-300)) ** 0.5
        worst = max(worst, (rel, k))
        if rel > 10 * REL_TOL:
            fail("%s: final %s differs from one process by %.3g (relative L2, tolerance %g)"
                 % (name, k, rel, 10 * REL_TOL))
    total = (diff2 / norm2) ** 0.5
    if total > REL_TOL:
        fail("%s: final parameters differ from one process by %.3g (relative L2 over the model, "
             "tolerance %g)" % (name, total, REL_TOL))
    return total, worst


def checkpoint_tensors(work, name):
    """Every logical tensor of the run's last checkpoint (moments too) through index.h5,
    and the checkpoint's shard files."""
    root = os.path.join(work, "ckpt_" + name)
    with open(os.path.join(root, "latest")) as f:
        step_dir = os.path.join(root, f.read().strip())
    with h5py.File(os.path.join(step_dir, "index.h5"), "r") as f:
        tensors = {k: f["tensors"][k][()] for k in f["tensors"]}
    return tensors, sorted(x for x in os.listdir(step_dir) if x.startswith("rank_"))


def zero_checkpoint_is_plain_checkpoint(opt, work):
    """With clipping off (the norm's summation order then cannot matter), the checkpoint a
    ZeRO-1 run writes (each dp rank its own moment range) holds bit for bit the tensors
    of a plain data-parallel run, parameters and AdamW moments, at dp = 2."""
    noclip = ["optim.grad_clip=0"]
    train(opt, work, "noclip_dp2", 2, 1, 1, noclip)
    train(opt, work, "noclip_zero_dp2", 2, 1, 1, noclip + ["parallel.zero=1"])
    plain, plain_files = checkpoint_tensors(work, "noclip_dp2")
    zero, zero_files = checkpoint_tensors(work, "noclip_zero_dp2")
    if plain_files != ["rank_00000.h5"] or zero_files != ["rank_00000.h5", "rank_00001.h5"]:
        fail("shard files: %s without ZeRO-1, %s with" % (plain_files, zero_files))
    if sorted(plain) != sorted(zero) or not any(k.endswith(".adam_m") for k in plain):
        fail("checkpoint tensors differ or lack moments: %s vs %s" % (sorted(plain), sorted(zero)))
    bad = [k for k in plain if plain[k].tobytes() != zero[k].tobytes()]
    if bad:
        fail("checkpoint tensors differ between zero=0 and zero=1 at dp=2: %s" % bad)
    print("  checkpoint: %d tensors identical with and without ZeRO-1" % len(plain), flush=True)


def check(name, ref, got):
    (ref_events, ref_params, ref_sample), (events, params, sample) = ref, got
    for event, key in (("metric", "loss"), ("metric", "grad_norm"), ("eval", "val_loss")):
        compare_series(name, key, series(ref_events, event, key), series(events, event, key))
    total, (rel, tensor) = compare_params(name, ref_params, params)
    # The prompt is the first micro-batch of rank 0's last step: the same at dp = 1.
    if "_dp1_" in "_" + name and (not sample or sample != ref_sample):
        fail("%s: greedy sample differs:\n%r\nvs one process:\n%r" % (name, sample, ref_sample))
    print("  %s: losses, norms, val losses match at %d steps; final parameters within %.2g "
          "(worst tensor %s: %.2g)" % (name, STEPS, total, tensor, rel), flush=True)


def main():
    def options(ap):
        ap.add_argument("--only", default="", help="run only the variants whose name contains this")
        ap.add_argument("--family", default="gpt2", choices=["gpt2", "llama"])
    opt = parse_options(__doc__, options)
    with tempfile.TemporaryDirectory(prefix="tessera_mpi_layouts_") as work:
        prepare_data(opt, work)
        if opt.family == "llama":
            llama_layouts(opt, work)
            print("PASS")
            return
        runs = variants()
        ref = train(opt, work, *runs[0])
        if len(series(ref[0], "metric", "loss")) != STEPS:
            fail("reference: expected %d metric lines" % STEPS)
        for variant in runs[1:]:
            if opt.only in variant[0]:
                check(variant[0], ref, train(opt, work, *variant))
        # A vocabulary not divisible by tp: 255 rows, 1 row of local padding at tp = 2.
        odd = ["model.vocab_size=255", "model.vocab_pad_to=1"]
        ref255 = train(opt, work, "v255_ref", 1, 1, 1, odd)
        for tp, pp in ((2, 1), (2, 2)):
            name = "v255_dp1_tp%d_pp%d" % (tp, pp)
            check(name, ref255, train(opt, work, name, 1, tp, pp, odd))
        zero_checkpoint_is_plain_checkpoint(opt, work)
    print("PASS")


if __name__ == "__main__":
    main()
