// The CUDA emulator: runs Tessera's GPU kernels, from their unchanged source, on the CPU.
//
// It exists so that a machine without a GPU (CI, every developer laptop) executes every
// line of every kernel against its CPU twin: indexing, tiling, the online softmax, the
// shuffles and barriers. It is a test tool, not a backend: slow, one CPU thread.
//
// How: the kernel files (kernels/cuda/*.cu) are compiled by the C++ compiler with
// TESSERA_CUDA_EMULATOR defined, which makes kernels/cuda/runtime.h include this header
// instead of the CUDA runtime's. A launch runs the grid one block at a time; each CUDA
// thread of a block is a fiber (ucontext) with its own stack, and the fibers take turns on
// one CPU thread, switching only where CUDA threads wait for each other (__syncthreads,
// __syncwarp, a shuffle or vote). So:
//  - __shared__ is `static`: one copy, which is the block's, because blocks run in turn.
//  - A barrier or shuffle that not every live thread of the block (warp) reaches is
//    reported as a failed launch, naming the block, instead of hanging.
//  - Dynamic shared memory starts filled with 0xFF bytes (NaN as floats): a kernel that
//    reads what it never wrote fails its test instead of passing by luck.
//  - "Device" memory is host memory. Streams run their work at the call; only results
//    that an operation leaves in flight (the NCCL emulator's) wait until something is
//    ordered after it (land_later, below), so that reading them too early fails a test.
// What it cannot show: races between blocks (they never run at once), timing, and the
// exact rounding of the GPU's math functions (expf, tanhf) and tensor-core sums.
// cuBLASLt is emulated in cublaslt_emulator.h.
#pragma once
#include <math.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

// ---- the CUDA C++ dialect, as plain C++ -----------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
#define __constant__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// CUDA's vector types, with CUDA's alignment (a float4 load is one 16-byte access).
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) ushort4 { unsigned short x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline ushort4 make_ushort4(unsigned short x, unsigned short y, unsigned short z,
                            unsigned short w) {
  return {x, y, z, w};
}

namespace tessera::kernels::cuda::emulator {

// Runs body() once for every thread of every block of the grid (see the top of the file).
// A bad configuration or a deadlock is reported through cudaGetLastError.
void run_grid(dim3 grid, dim3 block, size_t dynamic_smem_bytes, const std::function<void()>& body);

// Inside a kernel: the running thread's coordinates.
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void* dynamic_shared_memory();

// Barriers: every live thread of the block / of the running thread's warp.
void sync_threads();
void sync_warp();
// Every lane of the warp posts `value` and gets the one posted by lane src_lane (a lane
// outside 0..31, or past the warp's last live lane, gets its own value back).
uint64_t warp_exchange(uint64_t value, int src_lane);
// The running thread's lane (0..31).
int lane_id();

template <typename T>
T shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(bits, src_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Every lane of the running warp posts `bytes` (at most 64) bytes from `mine`; `all`
// receives all 32 posts, lane l's at all + l * bytes. For the warp-wide matrix
// instructions (kernels/cuda/mma.cuh), which need all 32 lanes: two warp barriers instead
// of one shuffle per register. Safe with one static copy because fibers switch only at
// barriers and blocks run in turn: every lane reads between the two barriers.
inline void warp_all_gather(const void* mine, void* all, size_t bytes) {
  static unsigned char posts[32][32][64];  // [warp of the block][lane][bytes]
  const dim3 t = thread_idx(), d = block_dim();
  const unsigned linear = t.x + d.x * (t.y + d.y * t.z);
  std::memcpy(posts[linear / 32][linear % 32], mine, bytes);
  sync_warp();  // every lane has posted
  for (int lane = 0; lane < 32; lane++)
    std::memcpy(static_cast<unsigned char*>(all) + (size_t)lane * bytes, posts[linear / 32][lane],
                bytes);
  sync_warp();  // every lane has read before anyone posts again
}

}  // namespace tessera::kernels::cuda::emulator

#define threadIdx (::tessera::kernels::cuda::emulator::thread_idx())
#define blockIdx (::tessera::kernels::cuda::emulator::block_idx())
#define blockDim (::tessera::kernels::cuda::emulator::block_dim())
#define gridDim (::tessera::kernels::cuda::emulator::grid_dim())
#define warpSize 32

inline void __syncthreads() { ::tessera::kernels::cuda::emulator::sync_threads(); }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { ::tessera::kernels::cuda::emulator::sync_warp(); }

// Shuffles within segments of `width` lanes, as CUDA defines them.
template <typename T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  const int lane = ::tessera::kernels::cuda::emulator::lane_id();
  return ::tessera::kernels::cuda::emulator::shuffle(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  const int lane = ::tessera::kernels::cuda::emulator::lane_id();
  const int src = lane ^ lane_mask;
  const bool same_segment = (src & ~(width - 1)) == (lane & ~(width - 1));
  return ::tessera::kernels::cuda::emulator::shuffle(v, same_segment ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::tessera::kernels::cuda::emulator::lane_id();
  const int src = lane + (int)delta;
  const bool same_segment = (src & ~(width - 1)) == (lane & ~(width - 1));
  return ::tessera::kernels::cuda::emulator::shuffle(v, same_segment ? src : lane);
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::tessera::kernels::cuda::emulator::lane_id();
  const int src = lane - (int)delta;
  const bool same_segment = src >= 0 && (src & ~(width - 1)) == (lane & ~(width - 1));
  return ::tessera::kernels::cuda::emulator::shuffle(v, same_segment ? src : lane);
}
unsigned __ballot_sync(unsigned mask, int predicate);
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == __ballot_sync(mask, 1);
}

// Atomics: blocks and threads never run at once, so plain read-modify-writes are atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  *address = std::max(old, value);
  return old;
}
template <typename T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <typename T>
T atomicOr(T* address, T value) {
  const T old = *address;
  *address = old | value;
  return old;
}

// Device math: the host's libm stands in for CUDA's (results may differ in the last bits).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
inline int __float_as_int(float x) { int u; std::memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int u) { float x; std::memcpy(&x, &u, 4); return x; }
inline int __clz(unsigned u) { return u ? __builtin_clz(u) : 32; }
inline int __popc(unsigned u) { return __builtin_popcount(u); }
inline int __ffs(unsigned u) { return __builtin_ffs((int)u); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- the runtime API, the part Tessera uses --------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
struct CUevent_st;
typedef CUevent_st* cudaEvent_t;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaHostAllocDefault = 0;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlockOptin;
  int major, minor, multiProcessorCount;
};

const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* event);
constexpr unsigned cudaEventDisableTiming = 2;
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) { return cudaSuccess; }

// ---- results in flight ------------------------------------------------------------------
// land_later(stream, land): the operation just made on `stream` ran, but its results reach
// memory only when `land` runs, once something is ordered after the operation, as a GPU's
// other streams and the host see an operation's results only after waiting for it:
//  - later work on the same stream (a launch, cudaMemcpyAsync, cudaMemsetAsync: they call
//    land_pending first);
//  - cudaStreamWaitEvent or cudaEventSynchronize of an event recorded after it, and
//    cudaStreamSynchronize of its stream, cudaDeviceSynchronize;
//  - cudaEventQuery of such an event from the thread that made the operation. A query
//    from another thread (the NCCL watchdog's) lands nothing and sees it unfinished, so a
//    background thread cannot hide a missing wait.
// The NCCL emulator leaves its collectives' and receives' results in flight, and a kernel
// launched on a stream other than the legacy default one runs only when it lands: a program
// that reads a result without ordering after it reads the old contents and fails its test.
// On the legacy default stream (nullptr), `land` runs at once. cudaFree lands everything,
// as a GPU's cudaFree waits for the device.
namespace tessera::kernels::cuda::emulator {
void land_later(cudaStream_t stream, std::function<void()> land);
void land_pending(cudaStream_t stream);
}  // namespace tessera::kernels::cuda::emulator

#include "kernels/cuda/emulator/cublaslt_emulator.h"
