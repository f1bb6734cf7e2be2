// Dropout on the GPU (kernels/cuda/ops.h: dropout_forward, dropout_backward): the mask is
// kernels/dropout.h's dropout_factor, the function the CPU calls, so the GPU keeps and
// drops exactly the CPU's elements. The forward is the CPU's to the bit (one multiply);
// the backward's multiply-add into dinp may be one fused rounding on either side.
//
// Elementwise: one thread per element of the [N, C] tensor.
//   dropout_forward_kernel, dropout_backward_kernel: grid ceil(N*C / 256), block 256, no smem.
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/dropout.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
}  // namespace

// out[n, c] = inp[n, c] * dropout_factor(mask, n, c)
__global__ void dropout_forward_kernel(float* out, const float* inp, int64_t N, int C,
                                       DropoutMask mask) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * C) return;
  out[i] = inp[i] * dropout_factor(mask, i / C, i % C);
}

// dinp[n, c] += dout[n, c] * dropout_factor(mask, n, c)
__global__ void dropout_backward_kernel(float* dinp, const float* dout, int64_t N, int C,
                                        DropoutMask mask) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * C) return;
  dinp[i] += dout[i] * dropout_factor(mask, i / C, i % C);
}

void dropout_forward(float* out, const float* inp, int N, int C, const DropoutMask& mask,
                     cudaStream_t stream) {
  const int64_t n = (int64_t)N * C;
  if (n == 0) return;
  launch("dropout_forward", {{"N", N}, {"C", C}}, dropout_forward_kernel,
         dim3((unsigned)ceil_div(n, kThreads)), dim3(kThreads), 0, stream, out, inp, (int64_t)N,
         C, mask);
}

void dropout_backward(float* dinp, const float* dout, int N, int C, const DropoutMask& mask,
                      cudaStream_t stream) {
  const int64_t n = (int64_t)N * C;
  if (n == 0) return;
  launch("dropout_backward", {{"N", N}, {"C", C}}, dropout_backward_kernel,
         dim3((unsigned)ceil_div(n, kThreads)), dim3(kThreads), 0, stream, dinp, dout,
         (int64_t)N, C, mask);
}

}  // namespace tessera::kernels::cuda
