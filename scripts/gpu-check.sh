#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a GPU (docs/cuda.md): the kernel tests
# against their CPU twins, a small GPT-2 trained on the GPU against the CPU
# (gpu_training_check), the NCCL communicator's tests at 1, 2 and 4 processes on the one
# GPU (gpu_nccl_tests) and the parallel layouts against one GPU (gpu_layout_check),
# compute-sanitizer's memcheck and racecheck on the kernel tests (cuDNN's attention against
# our flash kernel among them), the
# kernel benchmark and GPT-2 124M training steps (gpu_train_bench). Prints one table; keeps every log and JSON under $OUT.
#
#   scripts/gpu-check.sh [BUILD_DIR]     (default build-gpu, made by `make gpu-binaries`)
#
# Exit status: 0 when every step passed or skipped for want of a GPU, 1 when one failed,
# 2 when the binaries or their libraries are missing, 3 when none failed but the time
# budget left some not run (or compute-sanitizer could not run on this machine).
#
# Environment: OUT (default gpu-check-out), CHECK_TIMEOUT (seconds per step, default 240;
# NCCL_CHECK_TIMEOUT for each multi-process NCCL step, default 90), GPU_CHECK_BUDGET
# (seconds for the whole run, default 540: a step gets at most what is left, and none is
# started with under 20 s left, so the table is printed inside a device call's limit),
# GPU_CHECK_STEPS (which steps, default all: tests training nccl layouts sanitizer bench
# train peer; a rerun can take the ones the first run did not reach),
# PYTORCH_PEER=1 to also time PyTorch's GPT-2 124M (T=1024, bf16, eager and torch.compile,
# the largest micro-batch that fits) on the same GPU, with its MFU against the bf16 GEMM
# peak gpu_bench measured.
set -u
BUILD=${1:-build-gpu}
OUT=${OUT:-gpu-check-out}
STEP_TIMEOUT=${CHECK_TIMEOUT:-240}
BUDGET=${GPU_CHECK_BUDGET:-540}
STEPS=" ${GPU_CHECK_STEPS:-tests training nccl layouts sanitizer bench train peer} "
mkdir -p "$OUT"
BIN=$BUILD/bin
CUDA_LIB=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64
export LD_LIBRARY_PATH="$BUILD/lib:$CUDA_LIB:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

for b in gpu_tests gpu_training_check gpu_nccl_tests gpu_layout_check gpu_bench gpu_train_bench; do
  [[ -x $BIN/$b ]] || { echo "gpu-check: $BIN/$b is missing: run make gpu-binaries" >&2; exit 2; }
done

# libnccl (218 MB, too big to carry): the toolkit's if it has one, else PyTorch's
# (the nvidia-nccl wheel); soname libnccl.so.2 in both.
if ldd "$BIN/gpu_nccl_tests" | grep -q 'libnccl.so.2 => not found'; then
  NCCL_LIB=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  [[ -n $NCCL_LIB ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$NCCL_LIB"
fi

# libcudnn (cuDNN attention; over a gigabyte with its engines): the toolkit's if it has
# one, else PyTorch's (the nvidia-cudnn wheel); the directory holds the sub-libraries that
# libcudnn.so.9 loads as well.
if ldd "$BIN/gpu_tests" | grep -q 'libcudnn.so.9 => not found'; then
  CUDNN_LIB=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
  [[ -n $CUDNN_LIB ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CUDNN_LIB"
fi

missing=$(for b in gpu_tests gpu_training_check gpu_nccl_tests gpu_layout_check gpu_bench gpu_train_bench; do
  ldd "$BIN/$b" | grep 'not found'; done | sort -u)
if [[ -n $missing ]]; then
  echo "gpu-check: libraries not found (a build without cuDNN: make gpu-binaries GPU_CMAKE_FLAGS=-DTESSERA_CUDNN=OFF):" >&2
  echo "$missing" >&2
  exit 2
fi

ROWS=() FAILED=() NOT_RUN=() LAST_NOT_RUN=0
# A row of the table; the rows after a step the budget left out say so instead.
row() {
  local text=$2
  [[ $LAST_NOT_RUN == 1 ]] && text="not run: the time budget (${BUDGET} s) was spent"
  ROWS+=("$(printf '%-34s %s' "$1" "$text")")
}
wanted() {  # whether GPU_CHECK_STEPS asks for step $1; a new section's rows start afresh
  LAST_NOT_RUN=0
  [[ $STEPS == *" $1 "* ]]
}
# Seconds a step may take: its own limit ($1) within what is left of the budget; 0 (do not
# start it) with under 20 s left.
time_for() {
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then echo 0; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}
# Whether step $1 may start, given $2 seconds by time_for; if not, it is recorded as not run.
may_start() {
  LAST_NOT_RUN=0
  [[ $2 != 0 ]] && return 0
  echo "$1: not run, the time budget was spent" >&2
  NOT_RUN+=("$1")
  LAST_NOT_RUN=1
  return 1
}

# The machine.
{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_mode \
    --format=csv,noheader | sed 's/^/gpu: /'
  nvcc --version | tail -1 | sed 's/^/nvcc: /'
  ldd "$BIN/gpu_tests" | grep -E 'libcudnn|libnccl' | sed 's/^[[:space:]]*/library: /'
  python3 -c 'import torch; print("pytorch:", torch.__version__, "cudnn", torch.backends.cudnn.version())' 2>/dev/null
  command -v compute-sanitizer > /dev/null && compute-sanitizer --version | head -2 | tail -1 \
    | sed 's/^/sanitizer: /'
} | tee "$OUT/machine.txt"

# gtest's summary line of a log: "N passed, M failed, K skipped".
summary() {
  local log=$1 passed failed skipped
  passed=$(grep -c '^\[       OK \]' "$log")
  failed=$(grep -c '^\[  FAILED  \].*(' "$log")
  skipped=$(grep -c '^\[  SKIPPED \].*(' "$log")
  echo "$passed passed, $failed failed, $skipped skipped"
}

# A step failed unless it passed (0) or skipped for want of a GPU (77).
failed_unless_ok() {  # name, rc
  [[ $2 == 0 || $2 == 77 ]] || FAILED+=("$1 (rc $2)")
}

run_step() {  # name, log, command...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS limit
  limit=$(time_for "$STEP_TIMEOUT")
  may_start "$name" "$limit" || return 125
  timeout "$limit" "$@" > "$OUT/$log" 2>&1
  local rc=$?
  local verdict="rc $rc"
  [[ $rc -eq 124 ]] && verdict="TIMED OUT after ${limit}s"
  echo "$name: $verdict, $((SECONDS - t0)) s" >&2
  failed_unless_ok "$name" "$rc"
  return $rc
}

# 1. The kernels against their CPU twins, at GPT-2's shapes.
if wanted tests; then
  run_step "tests" gpu_tests.log "$BIN/gpu_tests" --gtest_output="json:$OUT/gpu_tests.json"
  row "kernel tests (GPT-2 shapes)" "$(summary "$OUT/gpu_tests.log")"
  row "cuDNN attention vs our flash" "$(grep -c '^\[cudnn vs flash\]' "$OUT/gpu_tests.log") shapes compared; $(grep -m1 -E '^\[ *(OK|FAILED|SKIPPED) *\] CudnnAttention.MatchesOurFlashKernel \(' "$OUT/gpu_tests.log" || echo 'no result')"
fi

# 2. Training on the GPU against the CPU in one process: fp32 losses step by step, bf16 with
# flash attention against fp32, the GPU's parameters continuing on the CPU (exit 77: no GPU).
if wanted training; then
  run_step "training" gpu_training_check.txt "$BIN/gpu_training_check"
  rc=$?
  verdict=$(sed -n 's/^gpu_training_check: //p' "$OUT/gpu_training_check.txt" 2>/dev/null | tail -1)
  row "small GPT-2 trained, GPU vs CPU" "${verdict:-no verdict} (rc $rc)"
fi

# 3. NCCL itself, on the one GPU: processes that are separate NCCL "hosts" (their own
# NCCL_HOSTID, which is what NCCL's duplicate-GPU check compares with the bus id; shared
# memory and P2P off; sockets on loopback, InfiniBand off, else NCCL would take the node's
# HCAs for its network), rank 0's id shared through a file (there is no MPI here;
# tests/nccl/file_bootstrap.h). Several processes on one GPU need its compute mode to be
# Default (machine.txt says). Rank 0's output first in each log, the other ranks' after it.
processes() {  # name, count, log, command...
  local name=$1 n=$2 log=$3 id="$OUT/nccl.id" pids=() rc=0 r limit
  shift 3
  limit=$(time_for "${NCCL_CHECK_TIMEOUT:-90}")
  may_start "$name" "$limit" || return 125
  rm -f "$id" "$OUT/$log"
  for ((r = 0; r < n; r++)); do
    NCCL_HOSTID="tessera-rank-$r" NCCL_SHM_DISABLE=1 NCCL_P2P_DISABLE=1 NCCL_IB_DISABLE=1 \
      NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo \
      TESSERA_NCCL_RANKS=$n TESSERA_NCCL_RANK=$r TESSERA_NCCL_ID_FILE="$id" \
      NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout "$limit" "$@" \
      > "$OUT/$log.rank$r" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  for ((r = 0; r < n; r++)); do cat "$OUT/$log.rank$r" >> "$OUT/$log"; done
  rm -f "$OUT/$log".rank* "$id"
  return $rc
}
# 3a. The communicator's tests at 1, 2 and 4 processes; a count that fails (or hangs)
# skips the larger ones and the layouts, to keep the run inside its time.
nccl_stop=""  # why the larger counts and the layouts are not run
if wanted nccl; then
  for n in 1 2 4; do
    if [[ -n $nccl_stop ]]; then row "NCCL communicator, $n process(es)" "not run ($nccl_stop)"; continue; fi
    t0=$SECONDS
    processes "nccl x$n" "$n" "nccl_n$n.log" "$BIN/gpu_nccl_tests"
    rc=$?
    [[ $rc == 125 ]] || { echo "nccl x$n: rc $rc, $((SECONDS - t0)) s" >&2; failed_unless_ok "nccl x$n" "$rc"; }
    row "NCCL communicator, $n process(es)" "$(summary "$OUT/nccl_n$n.log" 2>/dev/null) (rc $rc)"
    case $rc in
      0) ;;
      77) nccl_stop="no GPU: the smaller count skipped" ;;
      125) nccl_stop="the time budget was spent" ;;
      *) nccl_stop="a smaller count failed" ;;
    esac
  done
fi
# 3b. The parallel layouts against one GPU, step by step (fp32, 1e-5).
if wanted layouts; then
  : > "$OUT/layouts.log"
  for layout in "--dp 2" "--dp 2 --zero" "--tp 2" "--pp 2 --schedule gpipe" "--pp 2 --schedule 1f1b"; do
    if [[ -n $nccl_stop ]]; then row "layout ${layout//--/}" "not run ($nccl_stop)"; continue; fi
    t0=$SECONDS
    # shellcheck disable=SC2086
    processes "layout $layout" 2 layouts.tmp "$BIN/gpu_layout_check" $layout
    rc=$?
    [[ -f $OUT/layouts.tmp ]] && cat "$OUT/layouts.tmp" >> "$OUT/layouts.log"
    verdict=$(sed -n 's/^gpu_layout_check: //p' "$OUT/layouts.tmp" 2>/dev/null | head -1)
    [[ $rc == 125 ]] || { echo "layout $layout: rc $rc, $((SECONDS - t0)) s" >&2; failed_unless_ok "layout $layout" "$rc"; }
    row "layout ${layout//--/}" "${verdict:-no verdict, see layouts.log} (rc $rc)"
  done
  rm -f "$OUT/layouts.tmp"
fi

# 4. The kernels' speed against the machine's measured copy bandwidth and GEMM peak.
if wanted bench; then
  run_step "bench" gpu_bench.txt "$BIN/gpu_bench" --json "$OUT/gpu_bench.json"
  row "kernel benchmark" "see below ($OUT/gpu_bench.txt)"
fi

# 5. GPT-2 124M training steps on the GPU (T=1024, bf16, the largest micro-batch that
# fits), MFU against the bf16 GEMM peak gpu_bench measured (0: not measured in this run).
peak=$(python3 -c "import json; print(json.load(open('$OUT/gpu_bench.json'))['bf16_peak_tflops'])" 2>/dev/null || echo 0)
if wanted train; then
  run_step "train bench" gpu_train_bench.txt "$BIN/gpu_train_bench" --model gpt2-124m --seq 1024 \
    --precision bf16 --steps 10 --peak-tflops "$peak" --json "$OUT/gpu_train_bench.json"
  row "Tessera GPT-2 124M bf16" "$(sed -n 's/^gpu_train_bench: //p' "$OUT/gpu_train_bench.txt" 2>/dev/null | tail -1)"
  # The same steps with cuDNN's attention, at the micro-batch found above.
  batch=$(python3 -c "import json; print(json.load(open('$OUT/gpu_train_bench.json'))['batch'])" 2>/dev/null || echo 8)
  run_step "train bench cudnn" gpu_train_bench_cudnn.txt "$BIN/gpu_train_bench" --model gpt2-124m \
    --seq 1024 --precision bf16 --attention cudnn --batch "$batch" --steps 10 --peak-tflops "$peak" \
    --json "$OUT/gpu_train_bench_cudnn.json"
  row "Tessera GPT-2 124M bf16 cuDNN" "$(sed -n 's/^gpu_train_bench: //p;s/^kernels.attention/&/p' "$OUT/gpu_train_bench_cudnn.txt" 2>/dev/null | tail -2 | tr '\n' ' ')"
fi

# 6. compute-sanitizer on the same tests at small shapes (it slows kernels 10-100x), but
# not cuDNN's attention: its kernels are cuDNN's, and our casts around them are tested
# on their own. After the benchmarks, which a tight budget should reach first. Some
# machines' runtimes (gVisor) refuse the sanitizer the device: a one-test probe first,
# and a refusal is "not run", not a failure of ours.
if wanted sanitizer; then
  probe_limit=$(time_for 60)
  if ! command -v compute-sanitizer > /dev/null; then
    row "compute-sanitizer" "not installed here"
  elif may_start "sanitizer probe" "$probe_limit"; then
    timeout "$probe_limit" compute-sanitizer --tool memcheck "$BIN/gpu_tests" \
      --gtest_filter=CudaResidual.InPlace > "$OUT/sanitizer_probe.log" 2>&1
    if ! grep -q 'PASSED .*1 test' "$OUT/sanitizer_probe.log"; then
      NOT_RUN+=("sanitizer (the probe failed: sanitizer_probe.log)")
      row "compute-sanitizer" "not run: its probe failed here: $(grep -m1 -iE 'not supported|error' "$OUT/sanitizer_probe.log" || echo 'see sanitizer_probe.log')"
    else
      for tool in memcheck racecheck; do
        TESSERA_GPU_TEST_SMALL=1 run_step "$tool" "$tool.log" compute-sanitizer --tool "$tool" \
          --error-exitcode 99 "$BIN/gpu_tests" --gtest_filter='-*Deterministic*:*BitIdentical*:CudnnAttention.*'
        rc=$?
        errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$OUT/$tool.log" 2>/dev/null | tail -1)
        row "compute-sanitizer $tool" "${errors:-no summary (rc $rc)}; tests: $(summary "$OUT/$tool.log" 2>/dev/null)"
      done
    fi
  else
    row "compute-sanitizer" "(budget)"
  fi
fi

# 7. The PyTorch peer, if asked for (its own log, warnings included: the record is the
# last line that is JSON). torch.compile's row compiles once per batch it tries, a minute
# or more each: on a tight budget, run this section in a call of its own
# (GPU_CHECK_STEPS="bench peer": the MFU needs gpu_bench's peak from the same run).
if wanted peer && [[ ${PYTORCH_PEER:-0} == 1 ]]; then
  for mode in eager compile; do
    flag=""; [[ $mode == compile ]] && flag="--compile"
    run_step "pytorch $mode" "pytorch_$mode.json" python3 bench/pytorch_gpt2.py --device cuda \
      --model gpt2-124m --seq 1024 --precision bf16 --find-batch --steps 10 --warmup 3 \
      --peak-tflops "$peak" $flag
    row "PyTorch GPT-2 124M bf16 ($mode)" "$(python3 -c "import json; r = json.loads([l for l in open('$OUT/pytorch_$mode.json').read().splitlines() if l.startswith('{')][-1]); print(f\"B={r['batch']} {r['tokens_per_s']:.0f} tokens/s, MFU {100 * r.get('mfu', 0):.1f}%\")" 2>/dev/null || echo failed)"
  done
fi
LAST_NOT_RUN=0

echo
echo "=== gpu-check: $(sed -n 's/^gpu: //p' "$OUT/machine.txt" | head -1), $SECONDS s of a ${BUDGET} s budget"
printf '%s\n' "${ROWS[@]}" | tee "$OUT/summary.txt"
echo
sed -n '/^check /,/^gpu_training_check: /p' "$OUT/gpu_training_check.txt" 2>/dev/null
echo
cat "$OUT/gpu_bench.txt" 2>/dev/null
echo
grep -h -E '^\[cudnn (vs flash|plan)\]' "$OUT/gpu_tests.log" 2>/dev/null
grep -h '^\[  FAILED  \].*(' "$OUT"/gpu_tests.log "$OUT"/memcheck.log "$OUT"/racecheck.log 2>/dev/null \
  | sort -u | head -40

# The exit status: 0 when every step passed or skipped for want of a GPU, 1 when one
# failed, 3 when none failed but some were not run.
if (( ${#FAILED[@]} > 0 )); then
  echo "gpu-check: failed: ${FAILED[*]}"
  exit 1
fi
if (( ${#NOT_RUN[@]} > 0 )); then
  echo "gpu-check: not run (the time budget, or a tool this machine refuses): ${NOT_RUN[*]}" \
    "(rerun their sections with" \
    "GPU_CHECK_STEPS, of: tests training nccl layouts sanitizer bench train peer)"
  exit 3
fi
echo "gpu-check: every step passed (or skipped without a GPU)"
