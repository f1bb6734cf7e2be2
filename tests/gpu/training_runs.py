#!/usr/bin/env python3
"""Training on the CUDA backend against the CPU: the same recipe, step by step.

  training_runs.py --tessera CPU_BIN --tessera-gpu GPU_BIN [--source-dir DIR] [--only PART]

GPU_BIN is a `tessera` whose train.device=cuda is the CUDA backend: in CI the one built on
the CUDA emulator (tessera_emulated_gpu: the unchanged kernels on the CPU), on a GPU
machine the real one (then CPU_BIN may be the same binary). The model is a small GPT-2
(2 layers, 64 wide, 4 heads, 32 tokens, global batch 8 in micro-batches of 4) on the
bundled text, one process each:

  fp32     50 steps on the GPU and on the CPU: every step's loss and every validation
           loss agree to 1e-4 relative. The gradient norm of step 1, the whole backward
           pass on the same weights, agrees to 1e-6; later ones to 1e-2 only: the kernels
           sum in other orders than the CPU's, AdamW magnifies the roundings in small
           gradients, and the norm (at a loss spike especially) shows them long before
           the loss does (1e-3 apart at step 29 while the losses are 2e-5 apart).
  resume   a GPU run stopped at step 25 (train.exit_after_step, which checkpoints) resumes
           on the CPU, and a CPU run stopped at step 25 resumes on the GPU: steps 26-50 of
           each give the losses of the uninterrupted CPU run (1e-4), so the checkpoint
           format is one for both devices.
  bf16     200 steps in bf16 on the GPU track the CPU's fp32 run: the final validation loss
           and the mean training loss of the last 10 steps within 2 %. One head of 64
           here, so that the GPU computes the attention as flash attention (run_start
           says which), where fp32 keeps the T x T probabilities.

Standard library (and the helpers of tests/mpi). Exit code 0 = pass.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, read_log, series, recipe_args  # noqa: E402
from layout_runs import prepare_data  # noqa: E402

import argparse  # noqa: E402

REL_TOL = 1e-4
HALF = 25


def train(binary, opt, work, name, steps, extra):
    sets = [
        "model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=32",
        "data.train=" + os.path.join(work, "data", "train_*.bin"),
        "data.val=" + os.path.join(work, "data", "val_*.bin"),
        "train.steps=%d" % steps, "train.global_batch=8", "train.micro_batch=4",
        "train.eval_every=10", "train.eval_batches=2", "train.sample_tokens=0",
        "optim.warmup_steps=5", "log.every=1",
    ] + list(extra)
    p = run(recipe_args(binary, opt.source_dir, work, name, sets), work, 900)
    if p.returncode != 0:
        fail("%s run failed\n%s" % (name, show(p)))
    events = read_log(work, name)
    model = events[0].get("model", {})
    want = "cuda" if "train.device=cuda" in extra else "cpu"
    if model.get("device") != want:
        fail("%s: run_start says model.device %r, expected %r" % (name, model.get("device"), want))
    return events


def compare(what, ref, got, first_step=0, tol=REL_TOL, ref_name="the CPU"):
    ref = [(s, v) for s, v in ref if s > first_step]
    got = [(s, v) for s, v in got if s > first_step]
    if not ref or [s for s, _ in ref] != [s for s, _ in got]:
        fail("%s: steps differ: %s vs %s" % (what, [s for s, _ in ref], [s for s, _ in got]))
    worst = 0.0
    for (step, a), (_, b) in zip(ref, got):
        rel = abs(a - b) / max(abs(a), abs(b), 1e-30)
        worst = max(worst, rel)
        if rel > tol:
            fail("%s at step %d: %r on %s, %r here (relative %.2g, tolerance %g)"
                 % (what, step, a, ref_name, b, rel, tol))
    print("  %s: %d steps agree, worst relative difference %.2g" % (what, len(ref), worst))


def fp32(opt, work, cpu):
    gpu = train(opt.tessera_gpu, opt, work, "gpu_fp32", 2 * HALF, ["train.device=cuda"])
    compare("fp32 loss", series(cpu, "metric", "loss"), series(gpu, "metric", "loss"))
    norms = series(cpu, "metric", "grad_norm"), series(gpu, "metric", "grad_norm")
    compare("fp32 grad_norm of step 1", norms[0][:1], norms[1][:1], tol=1e-6)
    compare("fp32 grad_norm", *norms, tol=1e-2)
    compare("fp32 val_loss", series(cpu, "eval", "val_loss"), series(gpu, "eval", "val_loss"))


def resume(opt, work, cpu):
    for first_bin, first_dev, second_bin, second_dev in (
            (opt.tessera_gpu, ["train.device=cuda"], opt.tessera, []),
            (opt.tessera, [], opt.tessera_gpu, ["train.device=cuda"])):
        tag = ("gpu" if first_dev else "cpu") + "_then_" + ("gpu" if second_dev else "cpu")
        train(first_bin, opt, work, tag + "_first", 2 * HALF,
              first_dev + ["train.exit_after_step=%d" % HALF])
        second = train(second_bin, opt, work, tag + "_second", 2 * HALF,
                       second_dev + ["checkpoint.resume=" + os.path.join(work, "ckpt_" + tag + "_first")])
        if second[0].get("resumed_from", {}).get("step") != HALF:
            fail("%s: run_start says resumed_from %s" % (tag, second[0].get("resumed_from")))
        compare(tag + " loss", series(cpu, "metric", "loss"), series(second, "metric", "loss"), HALF)


def bf16(opt, work):
    steps, one_head = 200, ["model.n_head=1"]
    ref = train(opt.tessera, opt, work, "cpu_fp32_long", steps, one_head)
    got = train(opt.tessera_gpu, opt, work, "gpu_bf16_long", steps,
                one_head + ["train.device=cuda", "train.precision=bf16"])
    kinds = (ref[0]["model"].get("attention"), got[0]["model"].get("attention"))
    if kinds != ("full", "flash"):
        fail("bf16: run_start model.attention is %s on the CPU and %s on the GPU, expected "
             "full and flash" % kinds)

    def tail_mean(events):
        losses = [v for _, v in series(events, "metric", "loss")][-10:]
        return sum(losses) / len(losses)

    for what, a, b in (("final val_loss", series(ref, "eval", "val_loss")[-1][1],
                        series(got, "eval", "val_loss")[-1][1]),
                       ("mean loss of the last 10 steps", tail_mean(ref), tail_mean(got))):
        rel = abs(b - a) / abs(a)
        if rel > 0.02:
            fail("bf16 on the GPU: %s %.5f is %.2f%% from the CPU's fp32 %.5f (tolerance 2%%)"
                 % (what, b, 100 * rel, a))
        print("  bf16 %s: %.5f vs fp32 %.5f (%.2f%%)" % (what, b, a, 100 * rel))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--tessera-gpu", required=True)
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--only", default="fp32,resume,bf16")
    opt = ap.parse_args()
    parts = opt.only.split(",")
    with tempfile.TemporaryDirectory(prefix="tessera_gpu_training_") as work:
        prepare_data(opt, work)
        if "fp32" in parts or "resume" in parts:
            cpu = train(opt.tessera, opt, work, "cpu_fp32", 2 * HALF, [])
            if "fp32" in parts:
                fp32(opt, work, cpu)
            if "resume" in parts:
                resume(opt, work, cpu)
        if "bf16" in parts:
            bf16(opt, work)
    print("PASS")


if __name__ == "__main__":
    main()
