// Residual add and bias add on the GPU (kernels/cuda/ops.h: residual_forward, add_bias):
// out = a + b and out[n, o] += bias[o], the CPU twins' single rounding, so the results are
// the CPU's to the bit.
//
// Memory-bound: one thread per 4 elements with float4 loads and stores where the pointers
// are 16-byte aligned, the N % 4 elements past the last float4 done one each by the first
// threads (the scalar tail); one thread per element otherwise.
//   residual_forward_kernel<Vec4>: grid ceil(N/4 / 256) (Vec4) or ceil(N / 256), block 256,
//   no smem.
// add_bias (a row-parallel layer's bias under tensor parallelism, after the all-reduce): one
// thread per element, the bias row read through the cache.
//   add_bias_kernel: grid ceil(N*OC / 256), block 256, no smem.
#include <algorithm>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

// out[i] = a[i] + b[i]; Vec4: thread i does elements 4i..4i+3, and element 4*(N/4) + i of
// the tail when i < N % 4.
template <bool Vec4>
__global__ void residual_forward_kernel(float* out, const float* a, const float* b, int64_t N) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Vec4) {
    const int64_t n4 = N / 4;
    if (i < n4) {
      const float4 x = reinterpret_cast<const float4*>(a)[i];
      const float4 y = reinterpret_cast<const float4*>(b)[i];
      reinterpret_cast<float4*>(out)[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
    const int64_t tail = 4 * n4 + i;
    if (i < 4 && tail < N) out[tail] = a[tail] + b[tail];
  } else {
    if (i < N) out[i] = a[i] + b[i];
  }
}

void residual_forward(float* out, const float* a, const float* b, int64_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (aligned16(out) && aligned16(a) && aligned16(b))
    launch("residual_forward", {{"N", N}}, residual_forward_kernel<true>,
           dim3((unsigned)ceil_div(std::max<int64_t>(N / 4, 1), kThreads)), dim3(kThreads), 0,
           stream, out, a, b, N);
  else
    launch("residual_forward", {{"N", N}}, residual_forward_kernel<false>,
           dim3((unsigned)ceil_div(N, kThreads)), dim3(kThreads), 0, stream, out, a, b, N);
}

// out[i] += bias[i % OC] over the N*OC elements of out [N, OC].
__global__ void add_bias_kernel(float* out, const float* bias, int64_t total, int OC) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < total) out[i] += bias[i % OC];
}

void add_bias(float* out, const float* bias, int N, int OC, cudaStream_t stream) {
  const int64_t total = (int64_t)N * OC;
  if (total == 0) return;
  launch("add_bias", {{"N", N}, {"OC", OC}}, add_bias_kernel,
         dim3((unsigned)ceil_div(total, kThreads)), dim3(kThreads), 0, stream, out, bias, total,
         OC);
}

}  // namespace tessera::kernels::cuda
