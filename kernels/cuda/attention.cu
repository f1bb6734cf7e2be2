// Causal multi-head attention, the non-flash path (kernels/cuda/ops.h: attention_scratch,
// attention_forward, attention_backward): the math of kernels/cpu/attention.cpp, with the
// per-head GEMMs as strided-batched cuBLASLt GEMMs over the B*NH heads (matmul.cu's
// gemm_batched) and the softmax ours.
//
// The heads are first copied out of qkv [B, T, 3, NH, HS] into contiguous [B, NH, T, HS]
// tensors, so that one batched GEMM covers every (b, h) at a single stride (qkv's own
// layout would need two strides, b and h). For one head, with Q, K, V its [T, HS] slices:
//   forward:  S = Q K^T (into att);  P = causal_softmax(S / sqrt(HS)) in place;  O = P V
//   backward: dP = dO V^T;  dV = P^T dO;  dS = P * (dP - rowsum(P * dP)) / sqrt(HS);
//             dQ = dS K;  dK = dS^T Q;  dqkv += dQ, dK, dV (merged back into qkv's layout)
//
// Scratch (attention_scratch floats): four [B, NH, T, HS] slots X0..X3, then (backward
// only) dP [B, NH, T, T]. Forward: Q, K, V in X0..X2; O overwrites Q (dead after S).
// Backward: Q, K, V, dO in X0..X3; dV overwrites V (dead after dP), dQ overwrites dO (dead
// after dV), dK overwrites K (dead after dQ). The full T x T products are computed,
// upper triangle included (cuBLASLt has no causal GEMM); the softmax zeroes it.
//
// Kernels:
//   split_heads_kernel<V>: dst [B, NH, T, HS] <- one third of qkv (or dout), V = 4
//     (float4) or 1 elements per thread; grid ceil(B T C / V / 256), block 256, no smem
//   merge_heads_kernel<V>: dst (row stride ld) <- or += src [B, NH, T, HS]; same shape
//   causal_softmax_kernel: one warp per row of att (online softmax: one pass for the max
//     and the sum, one to write); grid ceil(B NH T / 8), block 256 (8 rows), no smem
//   causal_softmax_backward_kernel: one warp per row of dP, in place; same shape
#include <cmath>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarpSize;
}  // namespace

// dst[b, h, t, d] = src[(b T + t) ld + h HS + d]: a thread per V consecutive elements of
// dst (V = 4: one float4 load and store; needs HS, ld and both pointers 16-byte
// aligned); writes coalesced, reads in runs of HS.
template <int V>
__global__ void split_heads_kernel(float* dst, const float* src, int64_t ld, int B, int T, int NH,
                                   int HS) {
  const int64_t idx = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
  if (idx >= (int64_t)B * NH * T * HS) return;
  const int d = (int)(idx % HS);
  const int t = (int)((idx / HS) % T);
  const int h = (int)((idx / ((int64_t)HS * T)) % NH);
  const int64_t b = idx / ((int64_t)HS * T * NH);
  const float* from = src + (b * T + t) * ld + (int64_t)h * HS + d;
  if constexpr (V == 4)
    *reinterpret_cast<float4*>(dst + idx) = *reinterpret_cast<const float4*>(from);
  else
    dst[idx] = *from;
}

// dst[(b T + t) ld + h HS + d] = (or +=) src[b, h, t, d]: a thread per V consecutive
// elements of dst, in dst's order (V as above).
template <int V>
__global__ void merge_heads_kernel(float* dst, int64_t ld, const float* src, bool accumulate,
                                   int B, int T, int NH, int HS) {
  const int64_t idx = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
  const int C = NH * HS;
  if (idx >= (int64_t)B * T * C) return;
  const int c = (int)(idx % C), h = c / HS, d = c % HS;
  const int64_t bt = idx / C, b = bt / T, t = bt % T;
  const float* from = src + ((b * NH + h) * T + t) * HS + d;
  float* to = dst + bt * ld + c;
  if constexpr (V == 4) {
    const float4 v = *reinterpret_cast<const float4*>(from);
    float4 o = v;
    if (accumulate) {
      o = *reinterpret_cast<const float4*>(to);
      o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
    }
    *reinterpret_cast<float4*>(to) = o;
  } else {
    *to = accumulate ? *to + *from : *from;
  }
}

// Row r of att [rows, T] (query i = r % T): p[j] = softmax_j(scale * s[j]) over j <= i,
// 0 above the diagonal. Online softmax: each lane keeps a running max and the sum of
// exp(x - max), rescaled when the max grows; the lanes' pairs are merged by shuffles.
__global__ void causal_softmax_kernel(float* att, int64_t rows, int T, float scale) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // the whole warp: rows are per warp
  const int i = (int)(row % T);
  float* p = att + row * T;
  float m = -INFINITY, s = 0.0f;
  for (int j = lane; j <= i; j += kWarpSize) {
    const float x = p[j] * scale;
    if (x > m) {
      s = s * expf(m - x) + 1.0f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  const float row_max = warp_max(m);
  s = m == -INFINITY ? 0.0f : s * expf(m - row_max);  // a lane with no column adds 0
  const float inv = 1.0f / warp_sum(s);
  for (int j = lane; j < T; j += kWarpSize)
    p[j] = j <= i ? expf(p[j] * scale - row_max) * inv : 0.0f;
}

// Row r of dp [rows, T], in place: dS[j] = P[j] (dP[j] - sum_k P[k] dP[k]) scale for
// j <= i, 0 above the diagonal.
__global__ void causal_softmax_backward_kernel(float* dp, const float* att, int64_t rows, int T,
                                               float scale) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int i = (int)(row % T);
  float* d = dp + row * T;
  const float* p = att + row * T;
  float dot = 0.0f;
  for (int j = lane; j <= i; j += kWarpSize) dot += p[j] * d[j];
  dot = warp_sum(dot);
  for (int j = lane; j < T; j += kWarpSize) d[j] = j <= i ? p[j] * (d[j] - dot) * scale : 0.0f;
}

namespace {

struct Heads {
  int B, T, C, NH, HS;
  int64_t slot() const { return (int64_t)B * T * C; }  // floats in one [B, NH, T, HS] tensor
  int64_t rows() const { return (int64_t)B * NH * T; }
};

Heads heads(const char* op, int B, int T, int C, int NH) {
  check(NH > 0 && C % NH == 0, std::string(op) + ": C=" + std::to_string(C) +
                                   " is not a multiple of NH=" + std::to_string(NH));
  return Heads{B, T, C, NH, C / NH};
}

// float4 copies when every row of every head starts 16-byte aligned.
bool vec4(const Heads& h, const float* a, const float* b, int64_t ld) {
  return h.HS % 4 == 0 && ld % 4 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

// dst [B, NH, T, HS] <- src's rows (row stride ld), C columns from src.
void split(const Heads& h, float* dst, const float* src, int64_t ld, cudaStream_t stream) {
  const bool v4 = vec4(h, dst, src, ld);
  launch("attention split_heads", {{"B", h.B}, {"T", h.T}, {"C", h.C}, {"NH", h.NH}},
         v4 ? split_heads_kernel<4> : split_heads_kernel<1>,
         dim3((unsigned)ceil_div(h.slot() / (v4 ? 4 : 1), kThreads)), dim3(kThreads), 0, stream,
         dst, src, ld, h.B, h.T, h.NH, h.HS);
}

// dst's rows (row stride ld), C columns <- (or +=) src [B, NH, T, HS].
void merge(const Heads& h, float* dst, int64_t ld, const float* src, bool accumulate,
           cudaStream_t stream) {
  const bool v4 = vec4(h, dst, src, ld);
  launch("attention merge_heads", {{"B", h.B}, {"T", h.T}, {"C", h.C}, {"NH", h.NH}},
         v4 ? merge_heads_kernel<4> : merge_heads_kernel<1>,
         dim3((unsigned)ceil_div(h.slot() / (v4 ? 4 : 1), kThreads)), dim3(kThreads), 0, stream,
         dst, ld, src, accumulate, h.B, h.T, h.NH, h.HS);
}

// C = op(A) op(B) for every head: C is M x N, the inner dimension K. Every per-head
// matrix here has T rows and is packed (row stride = its width), the heads one after the
// other, so each leading dimension and batch stride follows from the shapes.
void per_head(const Heads& h, bool ta, bool tb, int M, int N, int K, const float* A,
              const float* B, float* C, cudaStream_t stream) {
  const int lda = ta ? M : K, ldb = tb ? K : N;
  gemm_batched(ta, tb, M, N, K, 1.0f, A, lda, (int64_t)h.T * lda, B, ldb, (int64_t)h.T * ldb,
               0.0f, C, N, (int64_t)h.T * N, h.B * h.NH, stream);
}

// The [B, NH, T, HS] tensors Q, K, V <- qkv [B, T, 3C] into scratch slots 0..2.
void split_qkv(const Heads& h, float* scratch, const float* qkv, cudaStream_t stream) {
  for (int part = 0; part < 3; part++)
    split(h, scratch + part * h.slot(), qkv + part * h.C, 3 * (int64_t)h.C, stream);
}

}  // namespace

int64_t attention_scratch(int B, int T, int C, int NH) {
  return 4 * (int64_t)B * T * C + (int64_t)B * NH * T * T;
}

void attention_forward(float* out, float* att, float* scratch, const float* qkv, int B, int T,
                       int C, int NH, cudaStream_t stream) {
  const Heads h = heads("attention_forward", B, T, C, NH);
  if ((int64_t)B * T == 0) return;
  const int HS = h.HS;
  float *q = scratch, *k = scratch + h.slot(), *v = scratch + 2 * h.slot();
  split_qkv(h, scratch, qkv, stream);
  per_head(h, false, true, T, T, HS, q, k, att, stream);  // S = Q K^T
  launch("attention causal_softmax", {{"B", B}, {"T", T}, {"NH", NH}}, causal_softmax_kernel,
         dim3((unsigned)ceil_div(h.rows(), kRowsPerBlock)), dim3(kThreads), 0, stream, att,
         h.rows(), T, 1.0f / sqrtf((float)HS));
  float* o = q;
  per_head(h, false, false, T, HS, T, att, v, o, stream);  // O = P V
  merge(h, out, C, o, /*accumulate=*/false, stream);
}

void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH, cudaStream_t stream) {
  const Heads h = heads("attention_backward", B, T, C, NH);
  if ((int64_t)B * T == 0) return;
  const int HS = h.HS;
  const int64_t n = h.slot();
  float *q = scratch, *k = scratch + n, *v = scratch + 2 * n, *dO = scratch + 3 * n;
  float* dp = scratch + 4 * n;
  split_qkv(h, scratch, qkv, stream);
  split(h, dO, dout, C, stream);
  per_head(h, false, true, T, T, HS, dO, v, dp, stream);  // dP = dO V^T
  float* dv = v;
  per_head(h, true, false, T, HS, T, att, dO, dv, stream);  // dV = P^T dO
  launch("attention causal_softmax_backward", {{"B", B}, {"T", T}, {"NH", NH}},
         causal_softmax_backward_kernel, dim3((unsigned)ceil_div(h.rows(), kRowsPerBlock)),
         dim3(kThreads), 0, stream, dp, att, h.rows(), T, 1.0f / sqrtf((float)HS));
  float* dq = dO;
  per_head(h, false, false, T, HS, T, dp, k, dq, stream);  // dQ = dS K
  float* dk = k;
  per_head(h, true, false, T, HS, T, dp, q, dk, stream);  // dK = dS^T Q
  const float* grads[3] = {dq, dk, dv};
  for (int part = 0; part < 3; part++)
    merge(h, dqkv + part * C, 3 * (int64_t)C, grads[part], /*accumulate=*/true, stream);
}

}  // namespace tessera::kernels::cuda
