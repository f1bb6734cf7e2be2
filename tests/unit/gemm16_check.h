// What test_bf16.cpp and test_fp16.cpp share: the entry-by-entry check of a 16-bit GEMM
// (bf16gemm, fp16gemm: A and B in 16 bits, C fp32), and from_bits.
//
// The reference multiplies the SAME 16-bit values (widened exactly to double), so the
// only error is the fp32 summation: each product of two 16-bit values is exact in fp32,
// and a length-K sum in any order is within gamma_K ~ K * u, u = 2^-24, of
// sum_k |a_k b_k| (Higham 3.1), plus a few roundings for alpha and beta: a rigorous
// bound, so an indexing or packing bug fails it. C's padding columns (>= N) must keep
// their 777, and with beta == 0 C (NaN here) must never be read.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace tessera::test {

// The float with these bits.
inline float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) on A [(ta ? K : M) x lda]
// and B [(tb ? N : K) x ldb]; widen(x) gives an element's exact value. Returns the
// failures (at most 5 are reported).
template <typename H, typename Gemm, typename Widen>
int check_gemm16(Gemm gemm, Widen widen, const std::string& what, bool ta, bool tb, int M, int N,
                 int K, float alpha, float beta, const std::vector<H>& A, int lda,
                 const std::vector<H>& B, int ldb, int pad) {
  const int ldc = N + pad;
  std::vector<float> C((size_t)M * ldc), C0;
  for (size_t i = 0; i < C.size(); i++)
    C[i] = (i % ldc) >= (size_t)N ? 777.0f : 0.01f * (i % 91) - 0.4f;
  C0 = C;
  if (beta == 0.0f)
    for (size_t i = 0; i < C.size(); i++)
      if ((i % ldc) < (size_t)N) C[i] = std::numeric_limits<float>::quiet_NaN();
  gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  const double u = std::ldexp(1.0, -24);
  int failures = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < ldc; j++) {
      const float got = C[(size_t)i * ldc + j];
      double dot = 0, mag = 0;
      for (int p = 0; p < K && j < N; p++) {
        const double a = widen(ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
        const double b = widen(tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
        dot += a * b;
        mag += std::fabs(a * b);
      }
      const double c0 = C0[(size_t)i * ldc + j];
      const double want = j >= N ? 777.0 : alpha * dot + (beta == 0.0f ? 0.0 : beta * c0);
      const double tol =
          j >= N ? 0 : (K + 4) * u * (std::fabs(alpha) * mag + std::fabs(beta * c0)) + 1e-30;
      if (!(std::fabs(got - want) <= tol) && failures++ < 5)
        ADD_FAILURE() << what << " " << (ta ? "T" : "N") << (tb ? "T" : "N") << " M=" << M
                      << " N=" << N << " K=" << K << " alpha=" << alpha << " beta=" << beta
                      << " pad=" << pad << ": C(" << i << "," << j << ") = " << got
                      << ", want " << want << " (tol " << tol << ")";
    }
  return failures;
}

}  // namespace tessera::test
