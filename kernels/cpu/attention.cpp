// Causal multi-head attention as per-(batch, head) GEMMs on strided views of qkv.
//
// For one (b, h), with Q, K, V the [T, HS] slices of qkv (row stride 3C) and O the
// [T, HS] slice of out (row stride C):
//   S = Q K^T / sqrt(HS);  P = softmax(S) row-wise over j <= i;  O = P V
// and backward, with dO given:
//   dP = dO V^T;  dV += P^T dO;  dS = P * (dP - rowsum(P * dP));  dQ += dS K / sqrt(HS);
//   dK += dS^T Q / sqrt(HS)
// The (b, h) pairs are spread over the OpenMP threads; each GEMM inside runs on one
// thread (Eigen does not nest its parallel GEMM inside an OpenMP region).
#include <Eigen/Core>
#include <cmath>
#include <limits>

#include "kernels/ops.h"

namespace tessera::kernels {

namespace {
template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Strided = Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using ConstStrided = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH) {
  const int HS = C / NH;
  const T scale = (T)1 / std::sqrt((T)HS);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const T* base = qkv + (int64_t)b * Tn * 3 * C + h * HS;
      ConstStrided<T> q(base, Tn, HS, Eigen::OuterStride<>(3 * C));
      ConstStrided<T> k(base + C, Tn, HS, Eigen::OuterStride<>(3 * C));
      ConstStrided<T> v(base + 2 * C, Tn, HS, Eigen::OuterStride<>(3 * C));
      Eigen::Map<RowMajor<T>> p(att + ((int64_t)b * NH + h) * Tn * Tn, Tn, Tn);
      p.noalias() = q * k.transpose();
      for (int i = 0; i < Tn; i++) {
        T* row = p.row(i).data();
        T maxv = -std::numeric_limits<T>::infinity();
        for (int j = 0; j <= i; j++) maxv = std::max(maxv, row[j] * scale);
        T sum = 0;
        for (int j = 0; j <= i; j++) {
          row[j] = std::exp(row[j] * scale - maxv);
          sum += row[j];
        }
        const T inv = (T)1 / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < Tn; j++) row[j] = 0;  // causal mask
      }
      Strided<T> o(out + (int64_t)b * Tn * C + h * HS, Tn, HS, Eigen::OuterStride<>(C));
      o.noalias() = p * v;
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
      const Eigen::OuterStride<> s3(3 * C), s1(C);
      ConstStrided<T> q(qkv + qkv_off, Tn, HS, s3);
      ConstStrided<T> k(qkv + qkv_off + C, Tn, HS, s3);
      ConstStrided<T> v(qkv + qkv_off + 2 * C, Tn, HS, s3);
      Strided<T> dq(dqkv + qkv_off, Tn, HS, s3);
      Strided<T> dk(dqkv + qkv_off + C, Tn, HS, s3);
      Strided<T> dv(dqkv + qkv_off + 2 * C, Tn, HS, s3);
      ConstStrided<T> dout_bh(dout + (int64_t)b * Tn * C + h * HS, Tn, HS, s1);
      const int64_t att_off = ((int64_t)b * NH + h) * Tn * Tn;
      Eigen::Map<const RowMajor<T>> p(att + att_off, Tn, Tn);
      Eigen::Map<RowMajor<T>> ds(scratch + att_off, Tn, Tn);

      dv.noalias() += p.transpose() * dout_bh;
      ds.noalias() = dout_bh * v.transpose();  // dP, turned into dS in place below
      for (int i = 0; i < Tn; i++) {
        T* d = ds.row(i).data();
        const T* pr = p.row(i).data();
        T dot = 0;
        for (int j = 0; j <= i; j++) dot += pr[j] * d[j];
        for (int j = 0; j <= i; j++) d[j] = pr[j] * (d[j] - dot) * scale;
        for (int j = i + 1; j < Tn; j++) d[j] = 0;
      }
      dq.noalias() += ds * k;
      dk.noalias() += ds.transpose() * q;
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
