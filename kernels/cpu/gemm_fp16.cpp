// The fp16 GEMM (see gemm_fp16.h for the contract): op(A) and op(B) cast to fp32, then
// sgemm, as this CPU has no fp16 dot products.
#include "kernels/cpu/gemm_fp16.h"

#include <cstddef>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace tessera::kernels {

namespace {

// op(X) as stored (rows x cols, leading dimension ld) converted to a compact fp32 matrix.
std::vector<float> to_fp32(const fp16* X, int rows, int cols, int ld) {
  std::vector<float> x((size_t)rows * cols);
  for (int r = 0; r < rows; r++)
    fp16_to_fp32_array(x.data() + (size_t)r * cols, X + (int64_t)r * ld, cols);
  return x;
}

}  // namespace

void fp16gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const fp16* A, int lda,
              const fp16* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // C = beta * C: sgemm's empty product
    sgemm(false, false, M, N, 0, 0.0f, nullptr, 1, nullptr, 1, beta, C, ldc);
    return;
  }
  // op(A) and op(B) as stored (A is K x M when transposed, B N x K), then sgemm.
  const std::vector<float> a = trans_a ? to_fp32(A, K, M, lda) : to_fp32(A, M, K, lda);
  const std::vector<float> b = trans_b ? to_fp32(B, N, K, ldb) : to_fp32(B, K, N, ldb);
  sgemm(trans_a, trans_b, M, N, K, alpha, a.data(), trans_a ? M : K, b.data(), trans_b ? K : N,
        beta, C, ldc);
}

}  // namespace tessera::kernels
