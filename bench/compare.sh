#!/usr/bin/env bash
# `make bench`: Tessera against PyTorch (python3-torch, CPU, 2 threads), same GPT-2 and Llama shapes,
# forward + backward + AdamW, side by side in one run, fp32 and bf16 (PyTorch's bf16 is its
# autocast), short and long sequences.
#
# PyTorch runs in its tuned setting (bench/peer.sh: BLAS, OpenMP, allocator). Tessera runs
# with 2 OpenMP threads. Each engine is measured twice, alternating, and the better median
# counts, so a burst of load from elsewhere does not decide the ratio. The T = 1024 rows
# (steps of 4096 tokens, where attention's T x T work is a large share) time
# BENCH_LONG_STEPS steps (default 2) after one warm-up step; BENCH_LONG=0 skips them.
# BENCH_SUITES (default "peer parallel checkpoint export precision") picks what runs.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
tessera="$build/bin/tessera"
steps=${BENCH_STEPS:-8}
long_steps=${BENCH_LONG_STEPS:-2}
source "$here/peer.sh"

run_tessera() {  # model batch seq precision steps warmup
  OMP_NUM_THREADS=2 "$tessera" bench --json --model "$1" --batch "$2" --seq "$3" --precision "$4" \
    --steps "$5" --warmup "$6"
}
run_torch() {
  torch_peer --model "$1" --batch "$2" --seq "$3" --precision "$4" --steps "$5" --warmup "$6" --threads 2
}

compare() {  # model batch seq precision steps warmup
  local t1 p1 t2 p2
  t1=$(run_tessera "$@"); p1=$(run_torch "$@"); t2=$(run_tessera "$@"); p2=$(run_torch "$@")
  /usr/bin/python3 - "$t1" "$t2" "$p1" "$p2" <<'PY'
import json, sys
t = max((json.loads(s) for s in sys.argv[1:3]), key=lambda r: r["tokens_per_s"])
p = max((json.loads(s) for s in sys.argv[3:5]), key=lambda r: r["tokens_per_s"])
peer = "PyTorch bf16 autocast" if p["precision"] == "bf16" else "PyTorch fp32"
print(f"\n{t['model']}  B={t['batch']} T={t['seq_len']}  {t['precision']}, 2 threads")
print(f"  {'engine':<18}{'tokens/s':>10}{'step ms':>10}{'forward':>10}{'backward':>10}{'optimizer':>10}"
      f"{'peak MiB':>10}")
for r in (t, p):
    print(f"  {r['engine']:<18}{r['tokens_per_s']:>10.1f}{r['step_ms']:>10.1f}{r['forward_ms']:>10.1f}"
          f"{r['backward_ms']:>10.1f}{r['optimizer_ms']:>10.1f}{r['peak_rss_mb']:>10.0f}")
print(f"  Tessera {t['precision']} / {peer} tokens/s: {t['tokens_per_s'] / p['tokens_per_s']:.2f}x"
      f"  (PyTorch's allocator: {p['allocator']})")
print(f"  Tessera: {t['achieved_gflops']:.1f} GFLOP/s of a measured fp32 peak of {t['peak_gflops']:.1f} "
      f"GFLOP/s (FMA loop, same run): MFU {100 * t['mfu']:.1f}%  ({t['flops_per_token'] / 1e6:.0f} MFLOP/token)")
print(f"  Tessera optimizer: {t['optimizer_bytes'] / 1e6:.0f} MB in {t['optimizer_ms']:.1f} ms, "
      f"{t['optimizer_ms'] / t['optimizer_bound_ms']:.2f}x the bound of {t['optimizer_bound_ms']:.1f} ms "
      f"(in-place triad {t['triad_gb_per_s']:.1f} GB/s, same run)")
PY
}

peer_rows() {
  echo "make bench: Tessera vs PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), $(nproc) cores, PyTorch allocator $TORCH_ALLOCATOR"
  compare gpt2-124m 4 64 fp32 "$steps" 2
  compare gpt2-124m 4 64 bf16 "$steps" 2
  compare small 8 128 fp32 "$steps" 2
  compare llama-114m 4 64 fp32 "$steps" 2  # recipes/llama-114m.yaml's shape (docs/llama.md)
  compare llama-114m 4 64 bf16 "$steps" 2
  if [[ "${BENCH_LONG:-1}" != 0 ]]; then
    for batch in 1 4; do
      compare gpt2-124m "$batch" 1024 fp32 "$long_steps" 1
      compare gpt2-124m "$batch" 1024 bf16 "$long_steps" 1
    done
  fi
}

suites=" ${BENCH_SUITES:-peer parallel checkpoint export precision} "
[[ "$suites" != *" peer "* ]] || peer_rows
# Parallel: all-reduce, data-parallel speed, ZeRO-1 memory, pipeline bubble.
[[ "$suites" != *" parallel "* ]] || "$here/parallel_bench.sh" "$build"
# Checkpoints: save/load bandwidth against dd, asynchronous stall, memory.
[[ "$suites" != *" checkpoint "* ]] || "$here/checkpoint_bench.sh" "$build"
# Export: peak memory against the model's size, time per format.
[[ "$suites" != *" export "* ]] || /usr/bin/python3 "$here/export_bench.py" --tessera "$build/bin/tessera"
# Mixed precision against fp32 and PyTorch's bf16 autocast; memory; LoRA.
[[ "$suites" != *" precision "* ]] || "$here/precision_bench.sh" "$build"
