# The PyTorch peer's launch, sourced by the benchmarks that run bench/pytorch_gpt2.py on the
# CPU, so that every comparison runs PyTorch the same, tuned way:
#   - the system OpenBLAS (PyTorch's fp32 GEMM here) without this machine's Haswell cap:
#     OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in its command alone;
#   - OMP_WAIT_POLICY=PASSIVE;
#   - its allocator tuned as PyTorch's CPU performance guides advise: glibc's malloc
#     returns PyTorch's large activation buffers to the system after every step, and the
#     pages are faulted in again on the next one (3-4x on this machine). TORCH_ALLOCATOR
#     picks one of: glibc (untuned, for comparison), glibc-tuned (mmap and trim thresholds
#     raised so freed blocks stay in the heap), jemalloc, tcmalloc (LD_PRELOAD). The
#     default is the one bench/peer_allocators.sh measured fastest (docs/performance.md).
TORCH_ALLOCATOR=${TORCH_ALLOCATOR:-tcmalloc}
PEER_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pytorch_gpt2.py"

# The environment assignments (for `env`) of allocator $1.
allocator_env() {
  local library
  case "$1" in
    glibc) ;;
    glibc-tuned) echo "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736" ;;
    jemalloc) library=$(allocator_library libjemalloc.so.2) || return 2; echo "LD_PRELOAD=$library" ;;
    tcmalloc) library=$(allocator_library libtcmalloc_minimal.so.4) || return 2; echo "LD_PRELOAD=$library" ;;
    *) echo "bench/peer.sh: TORCH_ALLOCATOR=$1 is not one of glibc, glibc-tuned, jemalloc, tcmalloc" >&2
       return 2 ;;
  esac
}

allocator_library() {  # the path of shared library $1, or an error naming its package
  local path
  path=$(/sbin/ldconfig -p | awk -v lib="$1" '$1 == lib { print $NF; exit }')
  if [[ -z "$path" ]]; then
    echo "bench/peer.sh: $1 is not installed (apt-get install libjemalloc2 libtcmalloc-minimal4; make deps does)" >&2
    return 2
  fi
  echo "$path"
}

# torch_peer [pytorch_gpt2.py arguments]: one JSON line, with "allocator" added.
torch_peer() {
  local allocation
  allocation=$(allocator_env "$TORCH_ALLOCATOR") || return 2
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE $allocation \
    /usr/bin/python3 "$PEER_SCRIPT" --allocator-name "$TORCH_ALLOCATOR" "$@"
}
