// Tessera's own fp32 GEMM for the CPU backend (kernels/cpu/gemm.cpp).
//
// Row-major, cblas-like (CblasRowMajor): C[M,N] = alpha * op(A) @ op(B) + beta * C,
// with op(X) = X or X^T. Leading dimensions are row strides in elements:
//   op(A) is M x K: A is stored M x K (lda >= K), or K x M when trans_a (lda >= M);
//   op(B) is K x N: B is stored K x N (ldb >= N), or N x K when trans_b (ldb >= K);
//   C is M x N (ldc >= N).
// beta == 0 never reads C (C may hold NaN or garbage). C must not alias A or B.
//
// Threads: called outside an OpenMP parallel region, the GEMM splits the work over the
// process's OpenMP threads (omp_get_max_threads(), fewer for small problems). Called from
// inside one (omp_in_parallel()), it runs on the calling thread alone: no nested
// parallelism, so attention's per-head GEMMs inside `#pragma omp parallel for` are safe.
//
// Reproducibility: the result never depends on timing. With several threads it is
// bit-identical to the one-thread result, except when K is much deeper than M and N
// (dInput of the lm head): then each thread sums a slice of K and the slices are added,
// so the bits depend on the number of threads. Memory: every thread keeps its packing
// buffers (about 2 MB) and, after a K split, an M x N float buffer, for reuse.
//
// Engine: with AVX-512 (-march=native on an AVX-512 machine: TESSERA_NATIVE=ON, the
// default) it is a BLIS/GotoBLAS-style blocked GEMM with packing and an 8x48 register-tile
// micro-kernel; without AVX-512 (TESSERA_NATIVE=OFF, or an AVX2 machine) a portable
// blocked loop that the compiler auto-vectorizes runs instead: same results up to
// rounding, slower. `gemm_engine()` says which one was compiled in.
#pragma once

namespace tessera::kernels {

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// "avx512-8x48" or "portable": the engine this build uses (for logs and benchmarks).
const char* gemm_engine();

// The same contract in double precision, on Eigen's GEMM: the kernels are also
// instantiated in double for the finite-difference tests, and only there.
void dgemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A, int lda,
           const double* B, int ldb, double beta, double* C, int ldc);

// One name for templated kernels: sgemm for float, dgemm for double.
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  dgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace tessera::kernels
