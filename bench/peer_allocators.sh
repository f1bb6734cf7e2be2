#!/usr/bin/env bash
# Which allocator the PyTorch peer runs with (bench/peer.sh's TORCH_ALLOCATOR), chosen by
# measurement: gpt2-124m, B=4 T=64, 2 threads, fp32 and bf16 autocast, PyTorch under each
# allocator and Tessera under glibc and the same alternatives (the tuning offered to both),
# in rounds that alternate every configuration; the better median of the rounds counts.
#
#   bench/peer_allocators.sh [BUILD_DIR]       (make bench-allocators; ROUNDS=2 BENCH_STEPS=6)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
source "$root/bench/peer.sh"
steps=${BENCH_STEPS:-6}
rounds=${ROUNDS:-2}
allocators="glibc glibc-tuned jemalloc tcmalloc"
out=$(mktemp "${TMPDIR:-/tmp}/tessera-allocators.XXXXXX")
trap 'rm -f "$out"' EXIT

tessera_with() {  # allocator precision
  local allocation
  allocation=$(allocator_env "$1") || return 2
  env OMP_NUM_THREADS=2 $allocation "$build/bin/tessera" bench --json --model gpt2-124m \
    --precision "$2" --batch 4 --seq 64 --steps "$steps" |
    /usr/bin/python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["allocator"] = sys.argv[1]; print(json.dumps(r))' "$1"
}

echo "== allocators: gpt2-124m B=4 T=64, 2 threads, $rounds rounds alternating =="
for round in $(seq "$rounds"); do
  for precision in fp32 bf16; do
    for allocator in $allocators; do
      TORCH_ALLOCATOR=$allocator torch_peer --model gpt2-124m --precision "$precision" --batch 4 \
        --seq 64 --steps "$steps" --threads 2 >>"$out"
      tessera_with "$allocator" "$precision" >>"$out"
    done
  done
done

/usr/bin/python3 - "$out" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = ("tessera" if r["engine"] == "tessera" else "pytorch", r["precision"], r["allocator"])
    if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
        best[key] = r
print(f"  {'engine':<10}{'precision':<11}{'allocator':<13}{'tokens/s':>10}{'step ms':>10}"
      f"{'forward':>10}{'backward':>10}{'optimizer':>10}{'peak MiB':>10}")
for key in sorted(best):
    r = best[key]
    print(f"  {key[0]:<10}{key[1]:<11}{key[2]:<13}{r['tokens_per_s']:>10.1f}{r['step_ms']:>10.1f}"
          f"{r['forward_ms']:>10.1f}{r['backward_ms']:>10.1f}{r['optimizer_ms']:>10.1f}{r['peak_rss_mb']:>10.0f}")
for engine in ("pytorch", "tessera"):
    for precision in ("fp32", "bf16"):
        rows = [r for k, r in best.items() if k[0] == engine and k[1] == precision]
        top = max(rows, key=lambda r: r["tokens_per_s"])
        glibc = best[engine, precision, "glibc"]
        print(f"  fastest {engine} {precision}: {top['allocator']} "
              f"({top['tokens_per_s'] / glibc['tokens_per_s']:.2f}x untuned glibc)")
PY
