#!/usr/bin/env bash
# Checkpoint benchmarks (save, load, asynchronous stall, memory), called by
# bench/compare.sh, so that `make bench` runs them. GPT-2 124M shapes (seq_len 64) on 2
# ranks at tp = 2, each rank writing its own half (parameters + AdamW moments, about
# 1.5 GB in all), in one temporary directory on one disk:
#
#   save   bytes / seconds of a synchronous save (create, write, fsync, index, rename,
#          update `latest`; deleting old checkpoints comes after), median of the 3rd-5th saves of a run, against `dd conv=fsync` writing
#          the same number of bytes to the same directory (median of 3); the first save is
#          shown too (see the comment at the table);
#   load   a resume in the writing layout: each rank reads its own boxes (each a whole
#          piece, read from its shard and checked against its checksum as it loads); against
#          `dd` reading a file of the same size. Page caches are dropped before each read
#          when this user may.
#   async  the training loop's stall (stall_seconds in the run log) per save with
#          checkpoint.async (a save every 3 steps) against a synchronous save, and the
#          step time while a background save runs against without;
#   memory the worst rank's peak RSS before the first save, after the saves (sync, async)
#          and after a resume, against this rank's shard size.
#
#   bench/checkpoint_bench.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
cd "$root"
tessera="$build/bin/tessera"

echo
echo "== checkpoint bench: gpt2-124m at tp=2 on 2 ranks, save/load vs dd, async stall, memory =="
bench_name="checkpoint bench"
source "$root/bench/gpt2_data.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-checkpoint-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$tessera" data prepare --input "$corpus" --out "$tmp/data" --tokenizer gpt2 \
  --encoder "$encoder" --merges "$merges" >/dev/null

seconds_of() {  # seconds the command takes
  local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N)
  /usr/bin/python3 -c "print(f'{$t1 - $t0:.3f}')"
}
drop_caches() { sync; { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null && echo dropped || echo kept; }

# train NAME [--set ...]: 2 ranks, tp=2; the run log ends up in $tmp/NAME.jsonl.
train() {
  local name=$1; shift
  OMP_NUM_THREADS=1 mpirun -n 2 --bind-to none -x OMP_NUM_THREADS \
    "$tessera" train recipes/gpt2-124m.yaml --set model.seq_len=64 \
    --set "data.train=$tmp/data/train_*.bin" --set data.val= \
    --set train.global_batch=2 --set train.micro_batch=1 --set train.eval_every=0 \
    --set train.sample_tokens=0 --set optim.warmup_steps=0 --set parallel.tp=2 \
    --set "log.dir=$tmp/log-$name" --set log.every=1 --set checkpoint.keep_last=1 "$@" \
    >"$tmp/$name.out" 2>&1 || { echo "checkpoint bench: run $name failed:" >&2; tail -20 "$tmp/$name.out" >&2; exit 1; }
  cp "$(find "$tmp/log-$name" -name run.jsonl | head -1)" "$tmp/$name.jsonl"
}

# The same starting state for dd and for the saves: page cache dropped (when this user
# may), so that neither pays for evicting the other's dirty pages.
mib=$(/usr/bin/python3 -c "print(124475904 * 3 * 4 // (1 << 20))")  # params + 2 moments, fp32
echo "(dd) writing and reading $mib MiB with dd in the same directory"
# Three times each (this disk's speed varies by 2x from one minute to the next): medians.
dd_writes=() dd_reads=()
for i in 1 2 3; do
  cache_dd=$(drop_caches)
  dd_writes+=("$(seconds_of dd if=/dev/zero of="$tmp/dd.bin" bs=1M count="$mib" conv=fsync status=none)")
  drop_caches >/dev/null
  dd_reads+=("$(seconds_of dd if="$tmp/dd.bin" of=/dev/null bs=1M status=none)")
  rm -f "$tmp/dd.bin"
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
dd_write=$(median "${dd_writes[@]}") dd_read=$(median "${dd_reads[@]}")
echo "  dd write ${dd_writes[*]} s, read ${dd_reads[*]} s"
echo "(save, async) 5 steps with a checkpoint after each; 6 steps with an asynchronous one every 3"
drop_caches >/dev/null
train sync --set train.steps=5 --set checkpoint.every=1 --set "checkpoint.dir=$tmp/ckpt-sync"
rm -rf "$tmp/ckpt-async"
drop_caches >/dev/null
train async --set train.steps=6 --set checkpoint.every=3 --set checkpoint.async=true \
  --set "checkpoint.dir=$tmp/ckpt-async"
rm -rf "$tmp/ckpt-async"
bytes=$(/usr/bin/python3 -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if '\"checkpoint\"' in l][-1]['bytes'])" "$tmp/sync.jsonl")
echo "(load) resuming from the synchronous run's last checkpoint"
cache_resume=$(drop_caches)
train resume --set train.steps=3 --set "checkpoint.resume=$tmp/ckpt-sync" --set "checkpoint.dir=$tmp/ckpt-resume"

/usr/bin/python3 - "$tmp" "$bytes" "$dd_write" "$dd_read" "$cache_dd" "$cache_resume" <<'PY'
import json, os, statistics, sys
tmp, nbytes, dd_write, dd_read, cache_dd, cache_resume = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
dd_bytes = 124475904 * 3 * 4 // (1 << 20) * (1 << 20)
def events(name):
    return [json.loads(l) for l in open(os.path.join(tmp, name + ".jsonl"))]
def of(ev, kind):
    return [e for e in ev if e["event"] == kind]
sync, asyn, resume = events("sync"), events("async"), events("resume")
mib = 1 << 20
# This VM backs guest memory on first touch: the first saves of a process write into page
# cache pages the guest never used, which costs far more than the disk; from the third
# save on, keep_last = 1 recycles the pages of the checkpoint it deletes, as dd's second
# and third runs recycle the first's. Compare like with like: the warm saves.
save_times = [e["seconds"] for e in of(sync, "checkpoint")]
save_s = statistics.median(save_times[2:])
print(f"\n(save) {nbytes / mib:.0f} MiB per checkpoint, 2 ranks writing their halves")
print(f"  tessera save: {save_s:.2f} s = {nbytes / save_s / mib:.0f} MiB/s (median of saves 3-5; all: " +
      ", ".join(f"{t:.2f}" for t in save_times) + " s; each: create, write, fsync, index, rename, update latest)")
print(f"  the first save (fresh guest memory for the page cache): {save_times[0]:.2f} s = {nbytes / save_times[0] / mib:.0f} MiB/s")
print(f"  dd conv=fsync: {dd_bytes / mib:.0f} MiB in {dd_write:.2f} s = {dd_bytes / dd_write / mib:.0f} MiB/s (median of 3; page cache {cache_dd} before each)")
r = (nbytes / save_s) / (dd_bytes / dd_write)
print(f"  save / dd: {100 * r:.0f}%  (target >= 70%: {'met' if r >= 0.7 else 'NOT met'})")
res = resume[0]["resumed_from"]
v, l = res["verify_seconds"], res["load_seconds"]
print(f"\n(load) resume = each rank reads its own boxes, checking the checksum of each that is a whole piece, "
      f"then the ranks check the pieces nobody read ({res['verified_bytes'] / mib:.0f} MiB here); page cache {cache_resume}")
print(f"  load {l:.2f} s, verify the rest {v:.2f} s: {nbytes / (v + l) / mib:.0f} MiB/s of checkpoint")
dd_rate = dd_bytes / dd_read
print(f"  dd read: {dd_read:.2f} s = {dd_rate / mib:.0f} MiB/s (median of 3; page cache {cache_dd})")
r = nbytes / (v + l) / dd_rate
print(f"  resume / dd: {100 * r:.0f}%  (target >= 70%: {'met' if r >= 0.7 else 'NOT met'})")
stall_sync = statistics.median(e["stall_seconds"] for e in of(sync, "checkpoint"))
first_async = of(asyn, "checkpoint")[0]  # step 3's; the last one (step 6) is waited for at the end
stall_async = first_async["stall_seconds"]
steps = {e["step"]: e["step_ms"] for e in of(asyn, "metric")}
print(f"\n(async) training stall per save: synchronous {stall_sync:.2f} s (median), asynchronous {stall_async:.2f} s "
      f"({100 * stall_async / stall_sync:.0f}%), published {first_async['seconds']:.2f} s after it started")
print(f"  step time with the save of step 3 in the background: step 4 {steps[4]:.0f} ms, step 5 {steps[5]:.0f} ms; "
      f"without: step 2 {steps[2]:.0f} ms, step 3 {steps[3]:.0f} ms (2 cores shared by 2 ranks and the writer threads)")
before = of(sync, "metric")[0]["peak_rss_mb"]
after_sync = max(e["peak_rss_mb"] for e in of(sync, "checkpoint"))
before_a = of(asyn, "metric")[0]["peak_rss_mb"]
after_async = max(e["peak_rss_mb"] for e in of(asyn, "checkpoint"))
shard = nbytes / 2 / mib
print(f"\n(memory) worst rank's peak RSS (MiB); this rank's shard is {shard:.0f} MiB")
print(f"  before the first save {before:.0f}; after synchronous saves {after_sync:.0f} (+{after_sync - before:.0f})")
print(f"  before the first save {before_a:.0f}; after asynchronous saves {after_async:.0f} (+{after_async - before_a:.0f}: the copy of the shard)")
print(f"  after resuming (verify + load) {res['peak_rss_mb']:.0f}; the same model trained from scratch peaks at {before:.0f} after its first step")
PY
