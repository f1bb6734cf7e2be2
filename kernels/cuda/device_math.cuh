// What every GPU kernel file shares: the launch helper (which names the kernel and its
// shapes when a launch fails), warp and block reductions, and the dynamic shared memory.
//
// Included only by .cu files. The same source compiles under nvcc for the GPU and under the
// C++ compiler with TESSERA_CUDA_EMULATOR for kernels/cuda/emulator (the kernels' tests on
// machines without a GPU): that is why launches go through launch() rather than <<<>>>.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cpu/cast_fp16.h"
#include "kernels/cuda/runtime.h"

namespace tessera::kernels::cuda {

constexpr int kWarpSize = 32;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// kernel<<<grid, block, smem_bytes, stream>>>(args...), then check_launch: a failed
// launch throws tessera::Error naming `name` and `shape`.
template <typename... Params, typename... Args>
void launch(const char* name, std::initializer_list<ShapeArg> shape, void (*kernel)(Params...),
            dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, Args... args) {
  note_launch(name, shape);
#ifdef TESSERA_CUDA_EMULATOR
  // On a stream of its own, the kernel runs once something is ordered after it, as its
  // results would be seen on a GPU (cuda_emulator.h, land_later); on the legacy default
  // stream, now.
  emulator::land_later(stream, [=] {
    emulator::run_grid(grid, block, smem_bytes, [&] { kernel(static_cast<Params>(args)...); });
  });
#else
  kernel<<<grid, block, smem_bytes, stream>>>(static_cast<Params>(args)...);
#endif
  check_launch(name, shape, stream);
}

// The kernel's dynamic shared memory (the launch's smem_bytes), as T*.
template <typename T>
__device__ inline T* dynamic_shared_memory() {
#ifdef TESSERA_CUDA_EMULATOR
  return static_cast<T*>(emulator::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char smem[];
  return reinterpret_cast<T*>(smem);
#endif
}

// Sum and max over the 32 lanes of a warp (butterfly: every lane gets the result).
template <typename T>
__device__ inline T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` is 32 values of shared memory; the block synchronizes twice.
// The order of the additions is fixed by the block shape, so the result is deterministic.
template <typename T>
__device__ inline T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : T(0);
  v = warp_sum(v);
  __syncthreads();  // scratch may be reused after return
  return v;
}

// bf16 / fp16 (stored as uint16_t) to and from fp32: the CPU's definitions (cast_bf16.h,
// cast_fp16.h), so both backends round identically.
__device__ inline float bf16_to_float(uint16_t h) { return bf16_to_fp32(bf16{h}); }
__device__ inline uint16_t float_to_bf16(float x) { return fp32_to_bf16(x).bits; }
__device__ inline float fp16_to_float(uint16_t h) { return fp16_to_fp32(fp16{h}); }
__device__ inline uint16_t float_to_fp16(float x) { return fp32_to_fp16(x).bits; }

}  // namespace tessera::kernels::cuda
