// kernels::sgemm against a naive double-precision reference.
//
// Tolerance: for a dot product of length K summed in fp32 in any order (blocked or with
// fused multiply-adds), |fl(s) - s| <= gamma_K * sum_k |a_k b_k| with gamma_K ~ K * u,
// u = 2^-24 (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1). The alpha
// and beta terms add a few more roundings, so each entry of C is checked against
//   (K + 4) * u * (|alpha| * sum_k |a_ik b_kj| + |beta * c_ij|)   (+ a tiny absolute term).
// This bound is rigorous, so any indexing or packing bug (an O(1) error) fails it.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "tests/unit/test_support.h"

namespace k = tessera::kernels;

namespace {

struct Case {
  bool ta, tb;
  int M, N, K;
  float alpha, beta;
  int pad_a = 0, pad_b = 0, pad_c = 0;  // extra columns in each leading dimension
};

std::string describe(const Case& c) {
  return std::string(c.ta ? "T" : "N") + (c.tb ? "T" : "N") + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         " alpha=" + std::to_string(c.alpha) + " beta=" + std::to_string(c.beta) +
         " pads=" + std::to_string(c.pad_a) + "," + std::to_string(c.pad_b) + "," +
         std::to_string(c.pad_c);
}

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Runs one case (sgemm on the calling thread's context) and checks every entry of C,
// and that the padding columns of C were left alone. Returns the number of failures.
int run_case(const Case& c, unsigned seed) {
  const int a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int lda = a_cols + c.pad_a, ldb = b_cols + c.pad_b, ldc = c.N + c.pad_c;
  const auto A = random_floats((size_t)a_rows * lda, seed);
  const auto B = random_floats((size_t)b_rows * ldb, seed + 1);
  auto C = random_floats((size_t)c.M * ldc, seed + 2);
  const float sentinel = 12345.0f;
  for (int i = 0; i < c.M; i++)
    for (int j = c.N; j < ldc; j++) C[(size_t)i * ldc + j] = sentinel;
  const auto C0 = C;
  if (c.beta == 0.0f)  // beta == 0 must not read C
    for (int i = 0; i < c.M; i++)
      for (int j = 0; j < c.N; j++) C[(size_t)i * ldc + j] = std::numeric_limits<float>::quiet_NaN();

  k::sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);

  const double u = std::ldexp(1.0, -24);
  int failures = 0;
  for (int i = 0; i < c.M; i++) {
    for (int j = 0; j < ldc; j++) {
      const float got = C[(size_t)i * ldc + j];
      if (j >= c.N) {
        if (got != sentinel && failures++ < 5)
          ADD_FAILURE() << describe(c) << ": padding C(" << i << "," << j << ") overwritten";
        continue;
      }
      double dot = 0, mag = 0;
      for (int p = 0; p < c.K; p++) {
        const double a = c.ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
        const double b = c.tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
        dot += a * b;
        mag += std::fabs(a * b);
      }
      const double c0 = c.beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j];
      const double want = (double)c.alpha * dot + (double)c.beta * c0;
      const double tol =
          (c.K + 4) * u * (std::fabs(c.alpha) * mag + std::fabs(c.beta * c0)) + 1e-30;
      if (!(std::fabs(got - want) <= tol) && failures++ < 5)
        ADD_FAILURE() << describe(c) << ": C(" << i << "," << j << ") = " << got << ", want "
                      << want << " (tol " << tol << ")";
    }
  }
  return failures;
}

const int kOddSizes[] = {1, 7, 17, 33, 65, 100, 257};
const std::pair<float, float> kAlphaBeta[] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.75f, 0.5f}};

using ThreadCount = tessera::test_support::OmpThreads;

}  // namespace

TEST(Gemm, ReportsEngine) {
  const std::string engine = k::gemm_engine();
  EXPECT_TRUE(engine == "avx512-8x48" || engine == "portable") << engine;
}

// Every transpose combination, each dimension through the odd sizes, three alpha/beta.
TEST(Gemm, OddSizesAllTransposesAlphaBeta) {
  ThreadCount one(1);
  unsigned seed = 1;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int s : kOddSizes)
        for (const auto& [alpha, beta] : kAlphaBeta) {
          const int shapes[4][3] = {{s, 33, 65}, {65, s, 17}, {17, 100, s}, {s, s, s}};
          for (const auto& mnk : shapes) {
            Case c{ta == 1, tb == 1, mnk[0], mnk[1], mnk[2], alpha, beta};
            ASSERT_EQ(run_case(c, seed++), 0);
          }
        }
}

// Leading dimensions larger than the logical widths (strided views, e.g. qkv slices).
TEST(Gemm, LeadingDimensions) {
  ThreadCount one(1);
  unsigned seed = 100;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (const auto& [alpha, beta] : kAlphaBeta) {
        ASSERT_EQ(run_case({ta == 1, tb == 1, 65, 100, 33, alpha, beta, 3, 17, 5}, seed++), 0);
        ASSERT_EQ(run_case({ta == 1, tb == 1, 64, 64, 64, alpha, beta, 128, 128, 128}, seed++), 0);
        ASSERT_EQ(run_case({ta == 1, tb == 1, 7, 257, 100, alpha, beta, 1, 2, 3}, seed++), 0);
      }
}

// Deep K (several K blocks: the accumulate-after-the-first-block path) and GPT-2 widths.
TEST(Gemm, DeepKAndModelWidths) {
  ThreadCount one(1);
  ASSERT_EQ(run_case({false, true, 16, 96, 1000, 1.0f, 0.0f}, 7), 0);  // forward, NT
  ASSERT_EQ(run_case({false, false, 16, 48, 2304, 1.0f, 1.0f}, 8), 0);  // dInput, NN
  ASSERT_EQ(run_case({true, false, 200, 48, 1030, 1.0f, 1.0f}, 9), 0);  // dWeight, TN
  ASSERT_EQ(run_case({false, true, 24, 2304, 768, 1.0f, 0.0f}, 10), 0);
}

// The threaded path: both split directions (M-heavy and N-heavy), all transposes.
TEST(Gemm, TwoThreads) {
  ThreadCount two(2);
  unsigned seed = 200;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      ASSERT_EQ(run_case({ta == 1, tb == 1, 257, 100, 200, 1.0f, 0.0f, 1, 0, 2}, seed++), 0);
      ASSERT_EQ(run_case({ta == 1, tb == 1, 65, 400, 257, -0.75f, 0.5f, 0, 3, 0}, seed++), 0);
      ASSERT_EQ(run_case({ta == 1, tb == 1, 96, 480, 300, 1.0f, 1.0f}, seed++), 0);
    }
}

// Deep K with small M and N takes the K-split path (thread 0 updates C, the others fill
// private buffers that are added at the end), with 2 and 3 threads.
TEST(Gemm, ThreadsSplitK) {
  unsigned seed = 250;
  for (int threads : {2, 3}) {
    ThreadCount count(threads);
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (const auto& [alpha, beta] : kAlphaBeta)
          ASSERT_EQ(run_case({ta == 1, tb == 1, 40, 57, 3001, alpha, beta, 1, 2, 3}, seed++), 0);
  }
}

// Reproducibility: splitting N or M keeps each element's sum in the serial order (same
// bits as one thread); the K split depends on the thread count only, not on timing.
TEST(Gemm, ThreadedResultsAreReproducible) {
  const auto run = [](int threads, int M, int N, int K) {
    ThreadCount count(threads);
    const auto A = random_floats((size_t)M * K, 1), B = random_floats((size_t)K * N, 2);
    std::vector<float> C((size_t)M * N, 0.0f);
    k::sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    return C;
  };
  EXPECT_EQ(run(1, 96, 960, 300), run(2, 96, 960, 300));  // N split
  EXPECT_EQ(run(1, 960, 96, 300), run(2, 960, 96, 300));  // M split
  const auto k_split = run(2, 40, 57, 3001);
  for (int i = 0; i < 3; i++) EXPECT_EQ(run(2, 40, 57, 3001), k_split);
}

// Called from inside a parallel region (attention's per-head GEMMs): each thread runs
// its own GEMMs on strided views, alone; results must be right on every thread.
TEST(Gemm, InsideParallelRegion) {
  ThreadCount two(2);
  int failures = 0;
#pragma omp parallel reduction(+ : failures)
  {
    const unsigned t = (unsigned)omp_get_thread_num();
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        // 64x64x64 heads out of a [T, 3C] buffer (lda = 3 * 768 would be slow to check;
        // 64 + 128 padding exercises the same strided path).
        failures += run_case({ta == 1, tb == 1, 64, 64, 64, 1.0f, 0.0f, 128, 128, 0}, 300 + t);
        failures += run_case({ta == 1, tb == 1, 200, 150, 120, 0.5f, 1.0f, 5, 0, 7}, 400 + t);
      }
  }
  EXPECT_EQ(failures, 0);
}

// Degenerate shapes: K == 0 scales C by beta; alpha == 0 does not touch A and B;
// M or N == 0 does nothing.
TEST(Gemm, DegenerateShapes) {
  std::vector<float> C = {1, 2, 3, 4}, untouched = C;
  k::sgemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  C.assign(4, std::numeric_limits<float>::quiet_NaN());
  k::sgemm(false, false, 2, 2, 3, 0.0f, nullptr, 3, nullptr, 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0, 0, 0, 0}));
  C = untouched;
  k::sgemm(true, true, 0, 2, 3, 1.0f, nullptr, 1, nullptr, 3, 0.0f, C.data(), 2);
  k::sgemm(true, true, 2, 0, 3, 1.0f, nullptr, 2, nullptr, 3, 0.0f, C.data(), 2);
  EXPECT_EQ(C, untouched);
}
