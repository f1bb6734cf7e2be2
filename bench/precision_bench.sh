#!/usr/bin/env bash
# Mixed precision and LoRA benchmarks: speed, memory, LoRA state; called by bench/compare.sh
# so that `make bench` runs them. GPT-2 124M, 2 threads, forward + backward + AdamW on
# synthetic tokens, median step of each run:
#
#   speed    Tessera bf16 against Tessera fp32 and against PyTorch's bf16 autocast
#            (oneDNN; PyTorch in its tuned setting, bench/peer.sh), at B=4 T=64 in one
#            micro-batch per step and in 4 (gradients accumulated, AdamW once per step).
#            Each engine runs twice, alternating; the better median counts.
#   memory   peak RSS of Tessera bf16 against fp32 at B=4 T=64 and at B=8 T=256, where
#            activations weigh more (one process per measurement);
#   lora     LoRA rank 8 on all four targets against full fine-tuning: AdamW state
#            (target below 5 % of full), trainable parameters, peak RSS and tokens/s.
#
#   bench/precision_bench.sh [BUILD_DIR]     PRECISION_BENCH_PARTS="speed memory lora"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tessera="$build/bin/tessera"
steps=${BENCH_STEPS:-6}
parts=${PRECISION_BENCH_PARTS:-speed memory lora}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-precision-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

tessera_run() {  # precision batch seq accum [extra flags]
  OMP_NUM_THREADS=2 "$tessera" bench --json --model gpt2-124m --precision "$1" --batch "$2" \
    --seq "$3" --accum "$4" --steps "$steps" "${@:5}"
}
source "$root/bench/peer.sh"
torch_run() {  # precision batch seq accum
  torch_peer --model gpt2-124m --precision "$1" --batch "$2" --seq "$3" --accum "$4" \
    --steps "$steps" --threads 2
}

echo
echo "== precision bench: gpt2-124m, 2 threads: Tessera bf16 vs fp32 vs PyTorch bf16 autocast; memory; LoRA =="

if [[ " $parts " == *" speed "* ]]; then
  for accum in 1 4; do
    : >"$tmp/speed"
    for round in 1 2; do
      tessera_run fp32 4 64 $accum >>"$tmp/speed"
      tessera_run bf16 4 64 $accum >>"$tmp/speed"
      torch_run bf16 4 64 $accum >>"$tmp/speed"
      torch_run fp32 4 64 $accum >>"$tmp/speed"
    done
    /usr/bin/python3 - "$tmp/speed" "$accum" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in runs:
    key = ("tessera" if r["engine"] == "tessera" else "pytorch", r["precision"])
    if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
        best[key] = r
print(f"\n(speed) B=4 T=64, {sys.argv[2]} micro-batch(es) per step ({4 * 64 * int(sys.argv[2])} tokens)")
print(f"  {'engine':<22}{'tokens/s':>10}{'step ms':>10}{'forward':>10}{'backward':>10}{'optimizer':>10}")
for key in (("tessera", "fp32"), ("tessera", "bf16"), ("pytorch", "fp32"), ("pytorch", "bf16")):
    r = best[key]
    print(f"  {key[0] + ' ' + key[1]:<22}{r['tokens_per_s']:>10.1f}{r['step_ms']:>10.1f}"
          f"{r['forward_ms']:>10.1f}{r['backward_ms']:>10.1f}{r['optimizer_ms']:>10.1f}")
t16, t32, p16 = best["tessera", "bf16"], best["tessera", "fp32"], best["pytorch", "bf16"]
print(f"  Tessera bf16 / Tessera fp32:     {t16['tokens_per_s'] / t32['tokens_per_s']:.2f}x  (target >= 1.5x)")
print(f"  Tessera bf16 / PyTorch bf16 autocast: {t16['tokens_per_s'] / p16['tokens_per_s']:.2f}x  (target >= 1.2x)")
PY
  done
fi

if [[ " $parts " == *" memory "* ]]; then
  echo
  echo "(memory) peak RSS of one process, bf16 against fp32 (AdamW state and master weights fp32 in both)"
  for shape in "4 64" "8 256"; do
    set -- $shape
    a=$(tessera_run fp32 "$1" "$2" 1 --steps 1)
    b=$(tessera_run bf16 "$1" "$2" 1 --steps 1)
    /usr/bin/python3 - "$a" "$b" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"  B={a['batch']} T={a['seq_len']}: fp32 {a['peak_rss_mb']:.0f} MiB, bf16 {b['peak_rss_mb']:.0f} MiB "
      f"({100 * b['peak_rss_mb'] / a['peak_rss_mb']:.0f}% of fp32)")
PY
  done
fi

if [[ " $parts " == *" lora "* ]]; then
  full=$(tessera_run fp32 4 64 1)
  lora=$(tessera_run fp32 4 64 1 --lora-rank 8)
  /usr/bin/python3 - "$full" "$lora" <<'PY'
import json, sys
f, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("\n(lora) rank 8 on qkv, attn_out, mlp_up, mlp_down against full fine-tuning, fp32, B=4 T=64")
print(f"  {'':<10}{'trainable':>14}{'AdamW state MiB':>18}{'peak RSS MiB':>14}{'tokens/s':>10}")
for name, r in (("full", f), ("LoRA r=8", l)):
    print(f"  {name:<10}{r['trainable_parameters']:>14,}{r['optimizer_state_mb']:>18.1f}"
          f"{r['peak_rss_mb']:>14.0f}{r['tokens_per_s']:>10.1f}")
print(f"  LoRA optimizer state: {100 * l['optimizer_state_mb'] / f['optimizer_state_mb']:.2f}% of full "
      f"(target < 5%); peak RSS {100 * l['peak_rss_mb'] / f['peak_rss_mb']:.0f}% of full")
PY
fi
