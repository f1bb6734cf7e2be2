// The fused classifier on the GPU (kernels/cuda/ops.h: crossentropy_forward_backward):
// softmax + cross-entropy loss + its gradient over the first V of Vp logit columns, with
// the CPU twin's formulas (kernels/cpu/crossentropy.cpp), expf for its vexp.
//
// One block per row, two passes over the row and no stored probabilities:
//  1. online softmax: each thread keeps the running max m and sum s = sum exp(x - m) of
//     its columns, rescaling s when the max grows (one expf per element except then);
//     the (m, s) pairs are merged across the warp by shuffles and across the warps
//     through shared memory, in a fixed order: every thread ends with the same bits, the
//     same every run.
//     loss = log(s) - (x[target] - m).
//  2. with dlogits: dlogits[j] = exp(x[j] - m) * (dloss / s) - dloss [j == target] for
//     j < V, 0 for V <= j < Vp: the CPU's expression.
// dlogits may alias logits: every element is read and then written by the same thread,
// and x[target] is read by every thread before the barrier that ends pass 1.
//   crossentropy_kernel<Vec4>: grid N, block 512, smem 256 B static.
// Vec4: float4 loads and stores of columns [0, V/4*4) when Vp % 4 == 0 and the pointers
// are 16-byte aligned (rows are then aligned too); the columns past them one at a time.
#include <cmath>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 512;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Adds column value v to the running (m, s).
__device__ inline void online_add(float& m, float& s, float v) {
  if (v > m) {
    s = s * expf(m - v) + 1.0f;
    m = v;
  } else {
    s += expf(v - m);
  }
}

// (m, s) <- the softmax statistics of both sets. An empty set (-inf, 0) makes no NaN.
// (With fused multiply-adds the butterfly's lanes may end a bit apart; only lane 0's
// result is used, and every thread then merges the warps' results in the same order.)
__device__ inline void online_merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  s = (m == mn ? s : s * expf(m - mn)) + (m2 == mn ? s2 : s2 * expf(m2 - mn));
  m = mn;
}

// dloss * (softmax_j - [j == target]) as the CPU computes it.
__device__ inline float grad(float v, int j, float m, float scale, int target, float dloss) {
  const float d = expf(v - m) * scale;
  return j == target ? d - dloss : d;
}
}  // namespace

// Row blockIdx.x: losses[row], and dlogits[row, :] when dlogits is not null.
template <bool Vec4>
__global__ void crossentropy_kernel(float* losses, float* dlogits, const float* logits,
                                    const int32_t* targets, float dloss, int V, int Vp) {
  __shared__ float warp_m[32], warp_s[32];
  const int row = blockIdx.x;
  const float* x = logits + (int64_t)row * Vp;
  const int target = targets[row];
  const float target_logit = x[target];  // now: with dlogits == logits, pass 2 overwrites it
  const int V4 = Vec4 ? V / 4 : 0;

  float m = -INFINITY, s = 0.0f;
  for (int j = threadIdx.x; j < V4; j += blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(x)[j];
    online_add(m, s, v.x);
    online_add(m, s, v.y);
    online_add(m, s, v.z);
    online_add(m, s, v.w);
  }
  for (int j = 4 * V4 + threadIdx.x; j < V; j += blockDim.x) online_add(m, s, x[j]);
  for (int offset = 16; offset > 0; offset /= 2) {
    const float m2 = __shfl_xor_sync(0xFFFFFFFFu, m, offset);
    const float s2 = __shfl_xor_sync(0xFFFFFFFFu, s, offset);
    online_merge(m, s, m2, s2);
  }
  if (threadIdx.x % kWarpSize == 0) {
    warp_m[threadIdx.x / kWarpSize] = m;
    warp_s[threadIdx.x / kWarpSize] = s;
  }
  __syncthreads();
  m = warp_m[0];
  s = warp_s[0];
  for (int w = 1; w < (int)blockDim.x / kWarpSize; w++) online_merge(m, s, warp_m[w], warp_s[w]);
  if (threadIdx.x == 0) losses[row] = logf(s) - (target_logit - m);
  if (dlogits == nullptr) return;

  float* out = dlogits + (int64_t)row * Vp;
  const float scale = dloss / s;
  for (int j = threadIdx.x; j < V4; j += blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(x)[j];
    reinterpret_cast<float4*>(out)[j] =
        make_float4(grad(v.x, 4 * j, m, scale, target, dloss),
                    grad(v.y, 4 * j + 1, m, scale, target, dloss),
                    grad(v.z, 4 * j + 2, m, scale, target, dloss),
                    grad(v.w, 4 * j + 3, m, scale, target, dloss));
  }
  for (int j = 4 * V4 + threadIdx.x; j < V; j += blockDim.x)
    out[j] = grad(x[j], j, m, scale, target, dloss);
  for (int j = V + threadIdx.x; j < Vp; j += blockDim.x) out[j] = 0.0f;
}

void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, float dloss, int N, int V, int Vp,
                                   cudaStream_t stream) {
  if (N == 0) return;
  const bool vec4 = Vp % 4 == 0 && aligned16(logits) && (dlogits == nullptr || aligned16(dlogits));
  launch("crossentropy_forward_backward", {{"N", N}, {"V", V}, {"Vp", Vp}},
         vec4 ? crossentropy_kernel<true> : crossentropy_kernel<false>, dim3((unsigned)N),
         dim3(kThreads), 0, stream, losses, dlogits, logits, targets, dloss, V, Vp);
}

}  // namespace tessera::kernels::cuda
