// Causal multi-head attention as per-(batch, head) GEMMs on strided views of qkv.
//
// For one (b, h), with Q, K, V the [T, HS] slices of qkv (row stride 3C) and O the
// [T, HS] slice of out (row stride C):
//   S = Q K^T / sqrt(HS);  P = softmax(S) row-wise over j <= i;  O = P V
// and backward, with dO given:
//   dP = dO V^T;  dV += P^T dO;  dS = P * (dP - rowsum(P * dP)) / sqrt(HS);
//   dQ += dS K;  dK += dS^T Q
// The (b, h) pairs are spread over the OpenMP threads; each GEMM inside runs on its
// thread alone (gemm() does not nest inside an OpenMP region). The leading dimensions
// (3C, C) let the GEMMs read Q, K, V and write O in place: nothing is transposed or copied.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH) {
  const int HS = C / NH;
  const T scale = (T)1 / std::sqrt((T)HS);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const T* q = qkv + (int64_t)b * Tn * 3 * C + h * HS;
      const T* k = q + C;
      const T* v = q + 2 * C;
      T* p = att + ((int64_t)b * NH + h) * Tn * Tn;
      gemm(false, true, Tn, Tn, HS, scale, q, 3 * C, k, 3 * C, (T)0, p, Tn);  // S = Q K^T / sqrt(HS)
      for (int i = 0; i < Tn; i++) {
        T* row = p + (int64_t)i * Tn;
        T maxv = -std::numeric_limits<T>::infinity();
        for (int j = 0; j <= i; j++) maxv = std::max(maxv, row[j]);
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= i; j++) {
          row[j] = vexp(row[j] - maxv);
          sum += row[j];
        }
        const T inv = (T)1 / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < Tn; j++) row[j] = 0;  // causal mask
      }
      T* o = out + (int64_t)b * Tn * C + h * HS;
      gemm(false, false, Tn, HS, Tn, (T)1, p, Tn, v, 3 * C, (T)0, o, C);  // O = P V
    }
  }
}

template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att,
                        int B, int Tn, int C, int NH) {
  const int HS = C / NH;
  const T scale = (T)1 / std::sqrt((T)HS);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const int64_t qkv_off = (int64_t)b * Tn * 3 * C + h * HS;
      const T *q = qkv + qkv_off, *k = q + C, *v = q + 2 * C;
      T *dq = dqkv + qkv_off, *dk = dq + C, *dv = dq + 2 * C;
      const T* dout_bh = dout + (int64_t)b * Tn * C + h * HS;
      const T* p = att + ((int64_t)b * NH + h) * Tn * Tn;
      T* ds = scratch + ((int64_t)b * NH + h) * Tn * Tn;

      gemm(true, false, Tn, HS, Tn, (T)1, p, Tn, dout_bh, C, (T)1, dv, 3 * C);     // dV += P^T dO
      gemm(false, true, Tn, Tn, HS, (T)1, dout_bh, C, v, 3 * C, (T)0, ds, Tn);     // dP = dO V^T
      for (int i = 0; i < Tn; i++) {  // dS = P * (dP - rowsum(P * dP)) / sqrt(HS), in place
        T* d = ds + (int64_t)i * Tn;
        const T* pr = p + (int64_t)i * Tn;
        T dot = 0;
        for (int j = 0; j <= i; j++) dot += pr[j] * d[j];
        for (int j = 0; j <= i; j++) d[j] = pr[j] * (d[j] - dot) * scale;
        for (int j = i + 1; j < Tn; j++) d[j] = 0;
      }
      gemm(false, false, Tn, HS, Tn, (T)1, ds, Tn, k, 3 * C, (T)1, dq, 3 * C);     // dQ += dS K
      gemm(true, false, Tn, HS, Tn, (T)1, ds, Tn, q, 3 * C, (T)1, dk, 3 * C);      // dK += dS^T Q
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int, int, int, int);

}  // namespace tessera::kernels
