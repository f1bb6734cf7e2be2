// The fused classifier on the GPU (kernels/cuda/ops.h: crossentropy_forward_backward):
// softmax + cross-entropy loss + its gradient over the first V of Vp logit columns, with
// the CPU twin's formulas (kernels/cpu/crossentropy.cpp), expf for its vexp.
//
// One block per row, two passes over the row and no stored probabilities:
//  1. online softmax (block_softmax_stats): each thread keeps the running max m and sum
//     s = sum exp(x - m) of its columns, rescaling s when the max grows (one expf per
//     element except then); the (m, s) pairs are merged across the warp by shuffles and
//     across the warps through shared memory, in a fixed order: every thread ends with
//     the same bits, the same every run.
//     loss = log(s) - (x[target] - m).
//  2. with dlogits (write_gradient): dlogits[j] = exp(x[j] - m) * (dloss / s) - dloss
//     [j == target] for j < V, 0 for V <= j < Vp: the CPU's expression.
// dlogits may alias logits: every element is read and then written by the same thread,
// and x[target] is read by every thread before the barrier that ends pass 1.
//   crossentropy_kernel<Vec4>: grid N, block 512, smem 256 B static.
// Vec4: float4 loads and stores of columns [0, V/4*4) when Vp % 4 == 0 and the pointers
// are 16-byte aligned (rows are then aligned too); the columns past them one at a time.
//
// The vocabulary-parallel form (crossentropy_shard_stats / _finish: each rank holds Vl
// columns of the vocabulary, the first n_real real) splits the two passes around the
// caller's all_gather of the per-row statistics:
//   crossentropy_shard_stats_kernel<Vec4>: grid N, block 512, smem 256 B static: pass 1
//     over the n_real columns; thread 0 writes {m, s, x[target] or 0} (m = -inf, s = 0
//     when n_real is 0).
//   crossentropy_shard_finish_kernel<Vec4>: grid N, block 512, no smem: every thread
//     merges the ranks' (m, s) in rank order (online_merge; `ranks` is the tensor-parallel
//     size, a handful, so no reduction tree), thread 0 writes the loss, then pass 2 over
//     the n_real columns and zeros in the padding.
// Vec4 there when Vl % 4 == 0 and the pointers are 16-byte aligned.
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

// The softmax statistics (m, s) of x[0..n) (-inf and 0 when n is 0) over the block, in the
// fixed order described at the top; every thread gets the same (m, s). warp_m and warp_s:
// 32 floats of shared memory each.
template <bool Vec4>
__device__ inline void block_softmax_stats(const float* x, int n, float* warp_m, float* warp_s,
                                           float& m, float& s) {
  const int n4 = Vec4 ? n / 4 : 0;
  m = -INFINITY;
  s = 0.0f;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(x)[j];
    online_add(m, s, v.x);
    online_add(m, s, v.y);
    online_add(m, s, v.z);
    online_add(m, s, v.w);
  }
  for (int j = 4 * n4 + threadIdx.x; j < n; j += blockDim.x) online_add(m, s, x[j]);
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
}

// out[0..Vp) = the gradient of the row x: grad() for the first n columns (target: the
// column of the row's target, or one outside [0, n) when another rank holds it), 0 for
// the padding columns n..Vp-1. out may alias x.
template <bool Vec4>
__device__ inline void write_gradient(float* out, const float* x, int n, int Vp, float m,
                                      float scale, int target, float dloss) {
  const int n4 = Vec4 ? n / 4 : 0;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(x)[j];
    reinterpret_cast<float4*>(out)[j] =
        make_float4(grad(v.x, 4 * j, m, scale, target, dloss),
                    grad(v.y, 4 * j + 1, m, scale, target, dloss),
                    grad(v.z, 4 * j + 2, m, scale, target, dloss),
                    grad(v.w, 4 * j + 3, m, scale, target, dloss));
  }
  for (int j = 4 * n4 + threadIdx.x; j < n; j += blockDim.x)
    out[j] = grad(x[j], j, m, scale, target, dloss);
  for (int j = n + threadIdx.x; j < Vp; j += blockDim.x) out[j] = 0.0f;
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
  float m, s;
  block_softmax_stats<Vec4>(x, V, warp_m, warp_s, m, s);
  if (threadIdx.x == 0) losses[row] = logf(s) - (target_logit - m);
  if (dlogits == nullptr) return;
  write_gradient<Vec4>(dlogits + (int64_t)row * Vp, x, V, Vp, m, dloss / s, target, dloss);
}

// Row blockIdx.x of stats [N, 3]: {m, s, x_t} over this rank's n_real real columns of Vl.
template <bool Vec4>
__global__ void crossentropy_shard_stats_kernel(float* stats, const float* logits,
                                                const int32_t* targets, int Vl, int n_real,
                                                int vocab_start) {
  __shared__ float warp_m[32], warp_s[32];
  const int row = blockIdx.x;
  const float* x = logits + (int64_t)row * Vl;
  float m, s;
  block_softmax_stats<Vec4>(x, n_real, warp_m, warp_s, m, s);
  if (threadIdx.x != 0) return;
  const int target = targets[row] - vocab_start;
  float* st = stats + 3 * (int64_t)row;
  st[0] = m;
  st[1] = s;
  st[2] = target >= 0 && target < n_real ? x[target] : 0.0f;
}

// Row blockIdx.x: losses[row] from the ranks' stats (all_stats [ranks, N, 3]), and
// dlogits[row, :] when dlogits is not null.
template <bool Vec4>
__global__ void crossentropy_shard_finish_kernel(float* losses, float* dlogits,
                                                 const float* logits, const float* all_stats,
                                                 int ranks, const int32_t* targets, float dloss,
                                                 int N, int Vl, int n_real, int vocab_start) {
  const int row = blockIdx.x;
  const float* st = all_stats + 3 * (int64_t)row;
  float m = st[0], s = st[1], target_logit = st[2];
  for (int r = 1; r < ranks; r++) {
    const float* other = st + (int64_t)r * 3 * N;
    online_merge(m, s, other[0], other[1]);
    target_logit += other[2];
  }
  if (threadIdx.x == 0) losses[row] = logf(s) - (target_logit - m);
  if (dlogits == nullptr) return;
  const int64_t offset = (int64_t)row * Vl;
  write_gradient<Vec4>(dlogits + offset, logits + offset, n_real, Vl, m, dloss / s,
                       targets[row] - vocab_start, dloss);
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

void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets, int N,
                              int Vl, int n_real, int vocab_start, cudaStream_t stream) {
  if (N == 0) return;
  const bool vec4 = Vl % 4 == 0 && aligned16(logits);
  launch("crossentropy_shard_stats",
         {{"N", N}, {"Vl", Vl}, {"n_real", n_real}, {"vocab_start", vocab_start}},
         vec4 ? crossentropy_shard_stats_kernel<true> : crossentropy_shard_stats_kernel<false>,
         dim3((unsigned)N), dim3(kThreads), 0, stream, stats, logits, targets, Vl, n_real,
         vocab_start);
}

void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                               const float* all_stats, int ranks, const int32_t* targets,
                               float dloss, int N, int Vl, int n_real, int vocab_start,
                               cudaStream_t stream) {
  if (N == 0) return;
  const bool vec4 = Vl % 4 == 0 && aligned16(logits) && (dlogits == nullptr || aligned16(dlogits));
  launch("crossentropy_shard_finish",
         {{"N", N}, {"Vl", Vl}, {"n_real", n_real}, {"ranks", ranks}, {"vocab_start", vocab_start}},
         vec4 ? crossentropy_shard_finish_kernel<true> : crossentropy_shard_finish_kernel<false>,
         dim3((unsigned)N), dim3(kThreads), 0, stream, losses, dlogits, logits, all_stats, ranks,
         targets, dloss, N, Vl, n_real, vocab_start);
}

}  // namespace tessera::kernels::cuda
