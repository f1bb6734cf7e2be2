#!/usr/bin/env bash
# `make bench`: Tessera against PyTorch (python3-torch, CPU, 2 threads, fp32), same
# GPT-2 shapes, forward + backward + AdamW, side by side in one run.
#
# PyTorch runs in its tuned setting (it uses the system OpenBLAS for fp32, which this
# machine holds to AVX2 with OPENBLAS_CORETYPE=Haswell): OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset in its command alone, OMP_WAIT_POLICY=PASSIVE. Tessera runs
# with 2 OpenMP threads. Each engine is measured twice, alternating, and the better
# median counts, so a burst of load from elsewhere does not decide the ratio.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
tessera="$build/bin/tessera"
steps=${BENCH_STEPS:-8}

run_tessera() { OMP_NUM_THREADS=2 "$tessera" bench --json --model "$1" --batch "$2" --seq "$3" --steps "$steps"; }
run_torch() {
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
    /usr/bin/python3 "$here/pytorch_gpt2.py" --model "$1" --batch "$2" --seq "$3" --steps "$steps" --threads 2
}

compare() {  # model batch seq
  local t1 p1 t2 p2
  t1=$(run_tessera "$@"); p1=$(run_torch "$@"); t2=$(run_tessera "$@"); p2=$(run_torch "$@")
  /usr/bin/python3 - "$t1" "$t2" "$p1" "$p2" <<'PY'
import json, sys
t = max((json.loads(s) for s in sys.argv[1:3]), key=lambda r: r["tokens_per_s"])
p = max((json.loads(s) for s in sys.argv[3:5]), key=lambda r: r["tokens_per_s"])
print(f"\n{t['model']}  B={t['batch']} T={t['seq_len']}  fp32, 2 threads")
print(f"  {'engine':<18}{'tokens/s':>10}{'step ms':>10}{'forward':>10}{'backward':>10}{'optimizer':>10}")
for r in (t, p):
    print(f"  {r['engine']:<18}{r['tokens_per_s']:>10.1f}{r['step_ms']:>10.1f}{r['forward_ms']:>10.1f}"
          f"{r['backward_ms']:>10.1f}{r['optimizer_ms']:>10.1f}")
print(f"  Tessera / PyTorch tokens/s: {t['tokens_per_s'] / p['tokens_per_s']:.2f}x")
print(f"  Tessera: {t['achieved_gflops']:.1f} GFLOP/s of a measured fp32 peak of {t['peak_gflops']:.1f} "
      f"GFLOP/s (FMA loop, same run): MFU {100 * t['mfu']:.1f}%  ({t['flops_per_token'] / 1e6:.0f} MFLOP/token)")
PY
}

echo "make bench: Tessera vs PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), $(nproc) cores"
compare gpt2-124m 4 64
compare small 8 128

# Parallel: all-reduce, data-parallel speed, ZeRO-1 memory, pipeline bubble.
"$here/parallel_bench.sh" "$build"
# Checkpoints: save/load bandwidth against dd, asynchronous stall, memory.
"$here/checkpoint_bench.sh" "$build"
# Export: peak memory against the model's size, time per format.
/usr/bin/python3 "$here/export_bench.py" --tessera "$build/bin/tessera"
# Mixed precision against fp32 and PyTorch's bf16 autocast; memory; LoRA.
"$here/precision_bench.sh" "$build"
