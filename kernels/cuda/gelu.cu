// GELU on the GPU, GPT-2's tanh approximation (kernels/cuda/ops.h: gelu_forward,
// gelu_backward), the CPU twin's formulas (kernels/cpu/gelu.cpp) with CUDA's tanhf.
//
// Elementwise and memory-bound: one thread per 4 elements with float4 loads and stores
// where the pointers are 16-byte aligned, the N % 4 elements past the last float4 done
// one each by the first threads (the scalar tail); one thread per element otherwise.
//   gelu_forward_kernel<Vec4>, gelu_backward_kernel<Vec4>: grid ceil(N/4 / 256) (Vec4) or
//   ceil(N / 256), block 256, no smem.
#include <cmath>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;  // (float)sqrt(2 / pi), as the CPU's

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ inline float gelu(float x) {
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// d gelu(x) / dx * dout
__device__ inline float gelu_grad(float x, float dout) {
  const float u = kSqrt2OverPi * (x + 0.044715f * x * x * x);
  const float th = tanhf(u);
  const float sech2 = 1.0f - th * th;
  const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
  return dout * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
}
}  // namespace

// out[i] = gelu(inp[i]); Vec4: thread i does elements 4i..4i+3, and element 4*(N/4) + i of
// the tail when i < N % 4.
template <bool Vec4>
__global__ void gelu_forward_kernel(float* out, const float* inp, int64_t N) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Vec4) {
    const int64_t n4 = N / 4;
    if (i < n4) {
      const float4 x = reinterpret_cast<const float4*>(inp)[i];
      reinterpret_cast<float4*>(out)[i] = make_float4(gelu(x.x), gelu(x.y), gelu(x.z), gelu(x.w));
    }
    const int64_t tail = 4 * n4 + i;
    if (i < 4 && tail < N) out[tail] = gelu(inp[tail]);
  } else {
    if (i < N) out[i] = gelu(inp[i]);
  }
}

// dinp[i] += dout[i] * gelu'(inp[i]); the same split as the forward.
template <bool Vec4>
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, int64_t N) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (Vec4) {
    const int64_t n4 = N / 4;
    if (i < n4) {
      const float4 x = reinterpret_cast<const float4*>(inp)[i];
      const float4 d = reinterpret_cast<const float4*>(dout)[i];
      float4 g = reinterpret_cast<float4*>(dinp)[i];
      g.x += gelu_grad(x.x, d.x);
      g.y += gelu_grad(x.y, d.y);
      g.z += gelu_grad(x.z, d.z);
      g.w += gelu_grad(x.w, d.w);
      reinterpret_cast<float4*>(dinp)[i] = g;
    }
    const int64_t tail = 4 * n4 + i;
    if (i < 4 && tail < N) dinp[tail] += gelu_grad(inp[tail], dout[tail]);
  } else {
    if (i < N) dinp[i] += gelu_grad(inp[i], dout[i]);
  }
}

void gelu_forward(float* out, const float* inp, int64_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (aligned16(out) && aligned16(inp))
    launch("gelu_forward", {{"N", N}}, gelu_forward_kernel<true>,
           dim3((unsigned)ceil_div(std::max<int64_t>(N / 4, 1), kThreads)), dim3(kThreads), 0,
           stream, out, inp, N);
  else
    launch("gelu_forward", {{"N", N}}, gelu_forward_kernel<false>,
           dim3((unsigned)ceil_div(N, kThreads)), dim3(kThreads), 0, stream, out, inp, N);
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N,
                   cudaStream_t stream) {
  if (N == 0) return;
  if (aligned16(dinp) && aligned16(inp) && aligned16(dout))
    launch("gelu_backward", {{"N", N}}, gelu_backward_kernel<true>,
           dim3((unsigned)ceil_div(std::max<int64_t>(N / 4, 1), kThreads)), dim3(kThreads), 0,
           stream, dinp, inp, dout, N);
  else
    launch("gelu_backward", {{"N", N}}, gelu_backward_kernel<false>,
           dim3((unsigned)ceil_div(N, kThreads)), dim3(kThreads), 0, stream, dinp, inp, dout, N);
}

}  // namespace tessera::kernels::cuda
