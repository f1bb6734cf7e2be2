// Causal multi-head attention as per-(batch, head) GEMMs on strided views of qkv, with
// grouped-query attention (GQA): NH query heads share NKV key/value heads, query head h
// reading key/value head h / (NH / NKV). GPT-2's multi-head attention is NKV = NH, with
// q, k and v the thirds of one qkv row.
//
// For one (b, h), with Q, K, V the [T, HS] slices of q, k, v (row strides q_stride,
// kv_stride) and O the [T, HS] slice of out (row stride NH HS):
//   S = Q K^T / sqrt(HS);  P = softmax(S) row-wise over j <= i;  O = P V
// and backward, with dO given:
//   dP = dO V^T;  dV += P^T dO;  dS = P * (dP - rowsum(P * dP)) / sqrt(HS);
//   dQ += dS K;  dK += dS^T Q
// The (b, h) pairs are spread over the OpenMP threads, and in the backward the (b, key/value
// head, block of key rows) triples, which sum their query heads' dK and dV in a fixed
// order; each GEMM inside runs on its thread alone (gemm() does not nest inside an OpenMP
// region). The leading dimensions (the row strides) let the GEMMs read Q, K, V and write O
// in place: nothing is transposed or copied.
//
// Causal blocking: P is zero above the diagonal, so every GEMM runs in blocks of
// kCausalBlock rows (or, for the transposed products, columns) and skips the part of
// the T x T matrix that the mask zeroes: a block of query rows [i0, i1) needs keys [0, i1)
// only, a block of key rows [j0, j1) receives from queries [j0, T) only. At T = 1024 that
// is 56 % of the full products' FLOPs; at T <= kCausalBlock the GEMMs are the full ones.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

namespace {
constexpr int kCausalBlock = 128;
}  // namespace

template <typename T>
void gqa_attention_forward(T* out, T* att, const T* q, const T* k, const T* v, int B, int Tn,
                           int NH, int NKV, int HS, int q_stride, int kv_stride) {
  const int64_t C = (int64_t)NH * HS;  // out's row
  const int group = NH / NKV;          // query heads per key/value head
  const T scale = (T)1 / std::sqrt((T)HS);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const T* qh = q + (int64_t)b * Tn * q_stride + (int64_t)h * HS;
      const T* kh = k + (int64_t)b * Tn * kv_stride + (int64_t)(h / group) * HS;
      const T* vh = v + (int64_t)b * Tn * kv_stride + (int64_t)(h / group) * HS;
      T* p = att + ((int64_t)b * NH + h) * Tn * Tn;
      T* o = out + (int64_t)b * Tn * C + (int64_t)h * HS;
      for (int i0 = 0; i0 < Tn; i0 += kCausalBlock) {
        const int i1 = std::min(i0 + kCausalBlock, Tn), rows = i1 - i0;
        T* p_rows = p + (int64_t)i0 * Tn;
        // S[i0:i1, 0:i1] = Q[i0:i1] K[0:i1]^T / sqrt(HS)
        gemm(false, true, rows, i1, HS, scale, qh + (int64_t)i0 * q_stride, q_stride, kh, kv_stride,
             (T)0, p_rows, Tn);
        for (int i = i0; i < i1; i++) {
          T* r = p + (int64_t)i * Tn;
          T maxv = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : maxv)
          for (int j = 0; j <= i; j++) maxv = std::max(maxv, r[j]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int j = 0; j <= i; j++) {
            r[j] = vexp(r[j] - maxv);
            sum += r[j];
          }
          const T inv = (T)1 / sum;
          for (int j = 0; j <= i; j++) r[j] *= inv;
          for (int j = i + 1; j < Tn; j++) r[j] = 0;  // causal mask
        }
        // O[i0:i1] = P[i0:i1, 0:i1] V[0:i1]
        gemm(false, false, rows, HS, i1, (T)1, p_rows, Tn, vh, kv_stride, (T)0, o + i0 * C, (int)C);
      }
    }
  }
}

template <typename T>
void gqa_attention_backward(T* dq, T* dk, T* dv, T* scratch, const T* dout, const T* q, const T* k,
                            const T* v, const T* att, int B, int Tn, int NH, int NKV, int HS,
                            int q_stride, int kv_stride) {
  const int64_t C = (int64_t)NH * HS;
  const int group = NH / NKV;
  const T scale = (T)1 / std::sqrt((T)HS);
  // Per query head: dS (kept in scratch) and dQ.
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const T* kh = k + (int64_t)b * Tn * kv_stride + (int64_t)(h / group) * HS;
      const T* vh = v + (int64_t)b * Tn * kv_stride + (int64_t)(h / group) * HS;
      T* dqh = dq + (int64_t)b * Tn * q_stride + (int64_t)h * HS;
      const T* dout_bh = dout + (int64_t)b * Tn * C + (int64_t)h * HS;
      const T* p = att + ((int64_t)b * NH + h) * Tn * Tn;
      T* ds = scratch + ((int64_t)b * NH + h) * Tn * Tn;
      for (int i0 = 0; i0 < Tn; i0 += kCausalBlock) {  // blocks of query rows
        const int i1 = std::min(i0 + kCausalBlock, Tn), rows = i1 - i0;
        // dP[i0:i1, 0:i1] = dO[i0:i1] V[0:i1]^T
        gemm(false, true, rows, i1, HS, (T)1, dout_bh + i0 * C, (int)C, vh, kv_stride, (T)0,
             ds + (int64_t)i0 * Tn, Tn);
        for (int i = i0; i < i1; i++) {  // dS = P * (dP - rowsum(P * dP)) / sqrt(HS), in place
          T* d = ds + (int64_t)i * Tn;
          const T* pr = p + (int64_t)i * Tn;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int j = 0; j <= i; j++) dot += pr[j] * d[j];
          for (int j = 0; j <= i; j++) d[j] = pr[j] * (d[j] - dot) * scale;
          for (int j = i + 1; j < Tn; j++) d[j] = 0;
        }
        // dQ[i0:i1] += dS[i0:i1, 0:i1] K[0:i1]
        gemm(false, false, rows, HS, i1, (T)1, ds + (int64_t)i0 * Tn, Tn, kh, kv_stride, (T)1,
             dqh + (int64_t)i0 * q_stride, q_stride);
      }
    }
  }
  // Per key/value head and block of key rows: dK and dV, summed over the group's query
  // heads in a fixed order (no two threads write the same rows: deterministic).
  const int key_blocks = (Tn + kCausalBlock - 1) / kCausalBlock;
#pragma omp parallel for collapse(3) schedule(dynamic)
  for (int b = 0; b < B; b++) {
    for (int kvh = 0; kvh < NKV; kvh++) {
      for (int jb = 0; jb < key_blocks; jb++) {
        const int j0 = jb * kCausalBlock, j1 = std::min(j0 + kCausalBlock, Tn), cols = j1 - j0;
        const int64_t corner = (int64_t)j0 * Tn + j0;  // P[j0:T, j0:j1], dS[j0:T, j0:j1]
        const int64_t kv_rows = ((int64_t)b * Tn + j0) * kv_stride + (int64_t)kvh * HS;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
          const T* qh = q + ((int64_t)b * Tn + j0) * q_stride + (int64_t)h * HS;
          const T* dout_bh = dout + ((int64_t)b * Tn + j0) * C + (int64_t)h * HS;
          const T* p = att + ((int64_t)b * NH + h) * Tn * Tn;
          const T* ds = scratch + ((int64_t)b * NH + h) * Tn * Tn;
          // dV[j0:j1] += P[j0:T, j0:j1]^T dO[j0:T];  dK[j0:j1] += dS[j0:T, j0:j1]^T Q[j0:T]
          gemm(true, false, cols, HS, Tn - j0, (T)1, p + corner, Tn, dout_bh, (int)C, (T)1,
               dv + kv_rows, kv_stride);
          gemm(true, false, cols, HS, Tn - j0, (T)1, ds + corner, Tn, qh, q_stride, (T)1,
               dk + kv_rows, kv_stride);
        }
      }
    }
  }
}

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH) {
  gqa_attention_forward(out, att, qkv, qkv + C, qkv + 2 * C, B, Tn, NH, NH, C / NH, 3 * C, 3 * C);
}

template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att, int B,
                        int Tn, int C, int NH) {
  gqa_attention_backward(dqkv, dqkv + C, dqkv + 2 * C, scratch, dout, qkv, qkv + C, qkv + 2 * C,
                         att, B, Tn, NH, NH, C / NH, 3 * C, 3 * C);
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int, int, int, int);

#define TESSERA_INSTANTIATE(T)                                                                \
  template void gqa_attention_forward<T>(T*, T*, const T*, const T*, const T*, int, int, int, int, \
                                         int, int, int);                                          \
  template void gqa_attention_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*, \
                                          const T*, int, int, int, int, int, int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
