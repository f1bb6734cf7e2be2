// fp32 <-> bf16 / fp16 on the GPU (kernels/cuda/ops.h: round_to_16bit, round_to_16bit_rows,
// widen_16bit, add_widened_16bit, round_to_bf16_stochastic), with the CPU's scalar conversions themselves
// (kernels/cpu/cast_bf16.h, cast_fp16.h are host-and-device code): the same bits as
// kernels/cpu/mixed_precision.h for every input, NaN, inf and denormals included.
//
// Elementwise and memory-bound: one thread per 4 elements (a float4 and a ushort4) where
// the pointers allow, the n % 4 elements past the last group done one each by the first
// threads (the scalar tail); one thread per element otherwise.
//   round_kernel<Round, Vec4>, widen_kernel<Fp16, Vec4, Add>: grid ceil(n/4 / 256) (Vec4) or
//   ceil(n / 256), block 256, no smem.
//   round_rows_kernel<Fp16> (a strided block of rows): one thread per element, grid
//   ceil(rows*cols / 256), block 256, no smem.
#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The roundings, as functors of (value, element index).
struct RoundBf16 {
  __device__ uint16_t operator()(float x, int64_t) const { return float_to_bf16(x); }
};
struct RoundFp16 {
  __device__ uint16_t operator()(float x, int64_t) const { return float_to_fp16(x); }
};
struct RoundBf16Stochastic {
  uint64_t seed, offset;  // element i uses the random bits of index offset + i
  __device__ uint16_t operator()(float x, int64_t i) const {
    return fp32_to_bf16_stochastic(x, bf16_random_bits(seed, offset + (uint64_t)i)).bits;
  }
};

template <bool Fp16>
__device__ inline float widen(uint16_t h) {
  return Fp16 ? fp16_to_float(h) : bf16_to_float(h);
}

// d = widen(h), or d += widen(h) (Add); plain assignment keeps -0 and NaN payloads.
template <bool Fp16, bool Add>
__device__ inline void widen_into(float& d, uint16_t h) {
  if constexpr (Add)
    d += widen<Fp16>(h);
  else
    d = widen<Fp16>(h);
}

int64_t blocks_for(int64_t n, bool vec4) {
  return ceil_div(vec4 ? std::max<int64_t>(n / 4, 1) : n, kThreads);
}
}  // namespace

// dst[i] = round(src[i], i); Vec4: thread i does elements 4i..4i+3, and element
// 4*(n/4) + i of the tail when i < n % 4.
template <typename Round, bool Vec4>
__global__ void round_kernel(uint16_t* dst, const float* src, int64_t n, Round round) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Vec4) {
    const int64_t n4 = n / 4;
    if (i < n4) {
      const float4 x = reinterpret_cast<const float4*>(src)[i];
      reinterpret_cast<ushort4*>(dst)[i] = make_ushort4(round(x.x, 4 * i), round(x.y, 4 * i + 1),
                                                        round(x.z, 4 * i + 2), round(x.w, 4 * i + 3));
    }
    const int64_t tail = 4 * n4 + i;
    if (i < 4 && tail < n) dst[tail] = round(src[tail], tail);
  } else {
    if (i < n) dst[i] = round(src[i], i);
  }
}

// dst[i] = src[i] widened from fp16 (Fp16) or bf16, or dst[i] += that (Add); the same
// split as round_kernel.
template <bool Fp16, bool Vec4, bool Add>
__global__ void widen_kernel(float* dst, const uint16_t* src, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Vec4) {
    const int64_t n4 = n / 4;
    if (i < n4) {
      const ushort4 h = reinterpret_cast<const ushort4*>(src)[i];
      float4 w = make_float4(widen<Fp16>(h.x), widen<Fp16>(h.y), widen<Fp16>(h.z), widen<Fp16>(h.w));
      if constexpr (Add) {
        const float4 d = reinterpret_cast<const float4*>(dst)[i];
        w = make_float4(d.x + w.x, d.y + w.y, d.z + w.z, d.w + w.w);
      }
      reinterpret_cast<float4*>(dst)[i] = w;
    }
    const int64_t tail = 4 * n4 + i;
    if (i < 4 && tail < n) widen_into<Fp16, Add>(dst[tail], src[tail]);
  } else {
    if (i < n) widen_into<Fp16, Add>(dst[i], src[i]);
  }
}

// dst[r, c] = round(src[r * src_stride + c]) for a [rows, cols] block of a wider matrix.
template <bool Fp16>
__global__ void round_rows_kernel(uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                                  int64_t src_stride) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const float x = src[(i / cols) * src_stride + i % cols];
  dst[i] = Fp16 ? float_to_fp16(x) : float_to_bf16(x);
}

namespace {
template <typename Round>
void launch_round(const char* name, uint16_t* dst, const float* src, int64_t n, Round round,
                  cudaStream_t stream) {
  if (n == 0) return;
  const bool vec4 = aligned(src, 16) && aligned(dst, 8);
  launch(name, {{"n", n}}, vec4 ? round_kernel<Round, true> : round_kernel<Round, false>,
         dim3((unsigned)blocks_for(n, vec4)), dim3(kThreads), 0, stream, dst, src, n, round);
}

template <bool Fp16, bool Add>
void launch_widen(const char* name, float* dst, const uint16_t* src, int64_t n,
                  cudaStream_t stream) {
  if (n == 0) return;
  const bool vec4 = aligned(src, 8) && aligned(dst, 16);
  launch(name, {{"n", n}}, vec4 ? widen_kernel<Fp16, true, Add> : widen_kernel<Fp16, false, Add>,
         dim3((unsigned)blocks_for(n, vec4)), dim3(kThreads), 0, stream, dst, src, n);
}
}  // namespace

void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (dt == Dtype::bf16)
    launch_round("round_to_bf16", dst, src, n, RoundBf16{}, stream);
  else if (dt == Dtype::fp16)
    launch_round("round_to_fp16", dst, src, n, RoundFp16{}, stream);
  else
    throw std::invalid_argument("round_to_16bit: fp32 is not a 16-bit type");
}

void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                         int64_t src_stride, cudaStream_t stream) {
  if (dt != Dtype::bf16 && dt != Dtype::fp16)
    throw std::invalid_argument("round_to_16bit_rows: fp32 is not a 16-bit type");
  if (rows * cols == 0) return;
  launch("round_to_16bit_rows", {{"rows", rows}, {"cols", cols}, {"src_stride", src_stride}},
         dt == Dtype::fp16 ? round_rows_kernel<true> : round_rows_kernel<false>,
         dim3((unsigned)ceil_div(rows * cols, kThreads)), dim3(kThreads), 0, stream, dst, src,
         rows, cols, src_stride);
}

void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n, cudaStream_t stream) {
  if (dt == Dtype::bf16)
    launch_widen<false, false>("widen_16bit", dst, src, n, stream);
  else if (dt == Dtype::fp16)
    launch_widen<true, false>("widen_16bit", dst, src, n, stream);
  else
    throw std::invalid_argument("widen_16bit: fp32 is not a 16-bit type");
}

void add_widened_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n,
                       cudaStream_t stream) {
  if (dt == Dtype::bf16)
    launch_widen<false, true>("add_widened_16bit", dst, src, n, stream);
  else if (dt == Dtype::fp16)
    launch_widen<true, true>("add_widened_16bit", dst, src, n, stream);
  else
    throw std::invalid_argument("add_widened_16bit: fp32 is not a 16-bit type");
}

void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                              uint64_t offset, cudaStream_t stream) {
  launch_round("round_to_bf16_stochastic", dst, src, n, RoundBf16Stochastic{seed, offset},
               stream);
}

}  // namespace tessera::kernels::cuda
