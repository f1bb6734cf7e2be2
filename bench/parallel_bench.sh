#!/usr/bin/env bash
# Parallel benchmarks (a) to (d) below,
# called at the end of bench/compare.sh, so `make bench` runs them:
#
#   (a) bench/bench_allreduce.cpp at 2 ranks: syncing a GPT-2 124M gradient buffer with
#       Tessera's buckets (in shared memory, as the trainer runs them on one node, and with
#       the ring) against one MPI_Allreduce (target >= 1.5x), and Tessera's bus bandwidth
#       against the best MPI_Allreduce at any message size, all measured in one run,
#       methods alternating, median and range of several rounds (about a minute);
#   (b) tokens/s of dp=2 with 1 OpenMP thread per rank, with and without ZeRO-1, against
#       dp=1 with 2 threads, same global batch, measured side by side (target: dp=2 >= 90%
#       of dp=1);
#   (c) peak resident memory per rank (the run log's peak_rss_mb, the worst rank) with
#       ZeRO-1 off and on at dp=2 and dp=4 (dp=4 oversubscribes 2 cores: fine for
#       memory), against the optimizer-state expectation 2 x 4 bytes x params / dp;
#   (d) the pipeline bubble (run log's pipeline_bubble) of GPipe and 1F1B at pp=2 and
#       pp=4 against the theoretical (p-1)/(m+p-1), with each schedule's peak memory.
#
#   bench/parallel_bench.sh [BUILD_DIR]
#
# Real GPT-2 BPE tokens from data/corpus/ (`tessera data prepare`), the real model shapes
# (12 layers, 12 heads, 768 wide, vocabulary 50257 padded to 50304) at seq_len 64, a few
# steps each. Every run also writes its final checkpoint (the trainer always does; about
# 1.5 GB at 124M, weights plus AdamW state), deleted straight after; it is written after
# the last metric line, so it does not enter tokens/s or peak_rss_mb.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)  # before the cd below: a relative path is of the caller's directory
cd "$root"
tessera="$build/bin/tessera"
steps=${PARALLEL_BENCH_STEPS:-4}      # (b); (c) needs 2: AdamW state exists from step 1


echo
echo "== parallel bench: data parallel on gpt2-124m shapes (B=4 x T=64 per step), pipeline bubble =="
bench_name="parallel bench"
source "$root/bench/gpt2_data.sh"


tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-parallel-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$tessera" data prepare --input "$corpus" --out "$tmp/data" --tokenizer gpt2 \
  --encoder "$encoder" --merges "$merges" >/dev/null

# train NAME NPROCS THREADS [--set ...]: one run; its run log ends up in $tmp/NAME.jsonl.
train() {
  local name=$1 np=$2 threads=$3; shift 3
  local dir="$tmp/run-$name"
  OMP_NUM_THREADS=$threads mpirun -n "$np" --bind-to none -x OMP_NUM_THREADS \
    "$tessera" train recipes/gpt2-124m.yaml \
    --set model.seq_len=64 \
    --set "data.train=$tmp/data/train_*.bin" --set data.val= \
    --set train.steps="${STEPS:-$steps}" --set train.global_batch=4 --set train.micro_batch=2 \
    --set train.eval_every=0 --set train.sample_tokens=0 --set optim.warmup_steps=0 \
    --set "checkpoint.dir=$dir/ckpt" --set checkpoint.every=0 --set checkpoint.keep_last=1 \
    --set checkpoint.resume=none \
    --set "log.dir=$dir/log" --set log.every=1 --set log.tensorboard=false \
    --set parallel.dp="$np" "$@" >"$dir.out" 2>&1 || {
      echo "parallel bench: run $name failed:" >&2; tail -20 "$dir.out" >&2; exit 1; }
  cp "$(find "$dir/log" -name run.jsonl | head -1)" "$tmp/$name.jsonl"
  rm -rf "$dir"
}

# (b) alternating, each three times; the best median counts (as in compare.sh), so a burst
# of load from elsewhere does not decide the ratio.
parts=${PARALLEL_BENCH_PARTS:-a b c d}  # e.g. PARALLEL_BENCH_PARTS=c for the memory table alone
if [[ $parts == *a* ]]; then
  echo "(a) gradient all-reduce: buckets vs one MPI_Allreduce, bus bandwidth (bench_allreduce, 2 ranks)"
  OMP_NUM_THREADS=1 mpirun -n 2 -x OMP_NUM_THREADS "$build/bin/bench_allreduce" \
    --rounds "${ALLREDUCE_BENCH_ROUNDS:-7}" | sed 's/^/  /' || {
      echo "parallel bench: bench_allreduce failed" >&2; exit 1; }
fi
if [[ $parts == *b* ]]; then
echo "(b) dp=2 x 1 thread (ZeRO-1 on and off) vs dp=1 x 2 threads, global batch 4, micro-batch 2, $steps steps each, run three times alternating"
# dp=2 with ZeRO-1 splits the optimizer step over the ranks as well; without it, each rank
# runs the whole AdamW step on its one thread.
for round in a b c; do
  train "dp1-$round" 1 2; train "dp2z-$round" 2 1 --set parallel.zero=1
  train "dp2-$round" 2 1 --set parallel.zero=0
done
fi

# (c) memory, one run each.
if [[ $parts == *c* ]]; then
echo "(c) peak RSS with ZeRO-1 off/on at dp=2 and dp=4"
# micro-batch 1: global batch 4 must divide by dp x micro-batch at dp=4.
for dp in 2 4; do
  for z in 0 1; do STEPS=2 train "mem-dp$dp-z$z" "$dp" 1 --set train.micro_batch=1 --set parallel.zero=$z; done
done
fi

# (d) pipeline bubble: pp = 2 and 4 stages of an 8-layer model (384 wide, byte vocabulary
# so that the LM head does not unbalance the last stage), 8 micro-batches of 1 x 128 per
# step, GPipe and 1F1B, one thread per rank. pp = 4 puts 4 ranks on this machine's 2
# cores (oversubscribed): each rank only gets a core while its neighbours wait.
if [[ $parts == *d* ]]; then
echo "(d) pipeline bubble, GPipe vs 1F1B at pp=2 and pp=4, 8 micro-batches, 6 steps each"
"$tessera" data prepare --input "$corpus" --out "$tmp/bytes" --tokenizer bytes >/dev/null
for pp in 2 4; do
  for schedule in gpipe 1f1b; do
    name="pp$pp-$schedule" dir="$tmp/run-pp$pp-$schedule"
    OMP_NUM_THREADS=1 mpirun -n "$pp" --bind-to none -x OMP_NUM_THREADS \
      "$tessera" train recipes/tiny.yaml \
      --set model.n_layer=8 --set model.n_head=6 --set model.n_embd=384 --set model.seq_len=128 \
      --set "data.train=$tmp/bytes/train_*.bin" --set data.val= \
      --set train.steps=6 --set train.global_batch=8 --set train.micro_batch=1 \
      --set train.eval_every=0 --set train.sample_tokens=0 --set optim.warmup_steps=0 \
      --set "checkpoint.dir=$dir/ckpt" --set "log.dir=$dir/log" --set log.every=1 \
      --set parallel.pp="$pp" --set parallel.schedule="$schedule" >"$dir.out" 2>&1 || {
        echo "parallel bench: run $name failed:" >&2; tail -20 "$dir.out" >&2; exit 1; }
    cp "$(find "$dir/log" -name run.jsonl | head -1)" "$tmp/$name.jsonl"
    rm -rf "$dir"
  done
done
fi

/usr/bin/python3 - "$tmp" <<'PY'
import json, statistics, sys, os
tmp = sys.argv[1]

def run(name):
    ev = [json.loads(l) for l in open(os.path.join(tmp, name + ".jsonl"))]
    start = next(e for e in ev if e["event"] == "run_start")
    metrics = [e for e in ev if e["event"] == "metric"]
    rates = [m["tokens_per_s"] for m in metrics[1:]] or [m["tokens_per_s"] for m in metrics]
    return {"tps": statistics.median(rates), "rss": max(m["peak_rss_mb"] for m in metrics),
            "params": start["model"]["parameters"], "steps": len(metrics),
            "sync": start["layout"].get("grad_sync", "?"),
            "ms": statistics.median(m["step_ms"] for m in metrics[1:] or metrics)}

if os.path.exists(os.path.join(tmp, "dp1-a.jsonl")):
    print("\n(b) tokens/s, median of the metric lines after the first; best of three runs")
    print(f"  {'layout':<30}{'tokens/s':>10}{'step ms':>10}   {'gradient sync':<16}runs (tokens/s)")
    best = {}
    for key, label in (("dp1", "dp=1 x 2 threads"), ("dp2z", "dp=2 x 1 thread, ZeRO-1"),
                       ("dp2", "dp=2 x 1 thread, no ZeRO")):
        rs = [run(f"{key}-{s}") for s in "abc"]
        b = max(rs, key=lambda r: r["tps"])
        best[key] = b
        print(f"  {label:<30}{b['tps']:>10.1f}{b['ms']:>10.1f}   {b['sync']:<16}" +
              ", ".join(f"{r['tps']:.1f}" for r in rs))
    verdict = lambda x: "met" if x >= 0.9 else "NOT met"
    ratio_z = best["dp2z"]["tps"] / best["dp1"]["tps"]
    ratio = best["dp2"]["tps"] / best["dp1"]["tps"]
    print(f"  dp=2 with ZeRO-1 / dp=1 tokens/s:    {100 * ratio_z:5.1f}%  (target >= 90%: {verdict(ratio_z)})")
    print(f"  dp=2 without ZeRO-1 / dp=1 tokens/s: {100 * ratio:5.1f}%  (target >= 90%: {verdict(ratio)}; "
          f"each rank runs the whole AdamW step on its one thread, twice the memory traffic of "
          f"dp=1's step on two threads; ZeRO-1 gives each rank half)")

if os.path.exists(os.path.join(tmp, "mem-dp2-z0.jsonl")):
  print("\n(c) peak resident memory per rank (peak_rss_mb: the worst rank's VmHWM, MiB)")
  params = run("mem-dp2-z0")["params"]
  mib = 1024 * 1024
  full = 2 * 4 * params / mib
  print(f"  {params / 1e6:.2f}M parameters; AdamW state m + v = 2 x 4 B x params = {full:.0f} MiB unsharded")
  print(f"  {'dp':>4}{'zero=0':>10}{'zero=1':>10}{'saved':>10}{'expected saved':>16}{'opt state/rank z1':>19}")
  for dp in (2, 4):
      z0, z1 = run(f"mem-dp{dp}-z0")["rss"], run(f"mem-dp{dp}-z1")["rss"]
      expect = full - full / dp  # ZeRO-1 keeps 1/dp of m and v on each rank
      print(f"  {dp:>4}{z0:>10.0f}{z1:>10.0f}{z0 - z1:>10.0f}{expect:>16.0f}{full / dp:>19.0f}")
  print("  expected saved = 2 x 4 B x params x (1 - 1/dp); optimizer state per rank with ZeRO-1 = 2 x 4 B x params / dp")

if os.path.exists(os.path.join(tmp, "pp2-gpipe.jsonl")):
    print("\n(d) pipeline bubble: fraction of the schedule a stage waits (median over steps 2-6, mean over stages)")
    print(f"  {'pp':>3}{'m':>4}  {'schedule':<9}{'bubble':>8}{'(p-1)/(m+p-1)':>15}{'step ms':>9}{'peak MiB':>10}")
    m = 8
    for pp in (2, 4):
        for schedule in ("gpipe", "1f1b"):
            ev = [json.loads(l) for l in open(os.path.join(tmp, f"pp{pp}-{schedule}.jsonl"))]
            metrics = [e for e in ev if e["event"] == "metric"][1:]
            bubble = statistics.median(e["pipeline_bubble"] for e in metrics)
            ms = statistics.median(e["step_ms"] for e in metrics)
            rss = max(e["peak_rss_mb"] for e in metrics)
            print(f"  {pp:>3}{m:>4}  {schedule:<9}{bubble:>8.3f}{(pp - 1) / (m + pp - 1):>15.3f}{ms:>9.0f}{rss:>10.0f}")
    print("  pp=4 runs 4 ranks on 2 cores: a stage computes at full speed only while others wait")
PY
