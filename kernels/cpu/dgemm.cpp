// Double-precision GEMM for the finite-difference tests, on Eigen maps of row-major
// buffers with leading dimensions (see gemm.h for the contract).
#include <Eigen/Core>

#include "kernels/cpu/gemm.h"

namespace tessera::kernels {

void dgemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A, int lda,
           const double* B, int ldb, double beta, double* C, int ldc) {
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstView = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;
  using View = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;
  // A stored view is op(X) itself, or op(X)^T when transposed: take its transpose then.
  const ConstView a(A, trans_a ? K : M, trans_a ? M : K, Eigen::OuterStride<>(lda));
  const ConstView b(B, trans_b ? N : K, trans_b ? K : N, Eigen::OuterStride<>(ldb));
  View c(C, M, N, Eigen::OuterStride<>(ldc));
  RowMajor product(M, N);
  if (trans_a && trans_b) product.noalias() = a.transpose() * b.transpose();
  else if (trans_a) product.noalias() = a.transpose() * b;
  else if (trans_b) product.noalias() = a * b.transpose();
  else product.noalias() = a * b;
  if (beta == 0.0) c = alpha * product;  // beta == 0 never reads C
  else c = beta * c + alpha * product;
}

}  // namespace tessera::kernels
