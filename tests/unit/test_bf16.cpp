// bf16 casts (kernels/cpu/cast_bf16.h) and bf16gemm (gemm_bf16.h) against a
// double-precision reference.
//
// GEMM tolerance: the reference multiplies the SAME bf16 values (converted exactly to
// double), so the only error is the fp32 summation: each product of two bf16 is exact in
// fp32, and a length-K sum in any order (VDPBF16PS adds pairs, the portable engine runs
// sgemm) is within gamma_K ~ K * u, u = 2^-24, of sum_k |a_k b_k| (Higham 3.1), plus a few
// roundings for alpha and beta: the bound of test_gemm.cpp, rigorous, so an indexing or
// packing bug fails it.
#include <gtest/gtest.h>
#include <omp.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/gemm16_check.h"
#include "tests/unit/test_support.h"

namespace k = tessera::kernels;

namespace {

using tessera::test::from_bits;
uint16_t rne(uint32_t fp32) { return k::fp32_to_bf16(from_bits(fp32)).bits; }

// Reference rounding of a finite x from its two bf16 neighbours, lo (toward zero) and
// hi (away; past the largest bf16 it stands for 2^128): nearest in double, ties to even.
uint16_t reference_rne(uint32_t u) {
  const uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  const double x = std::fabs((double)from_bits(u));
  const double vlo = std::fabs((double)k::bf16_to_fp32({lo}));
  const double vhi = (hi & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128) : std::fabs((double)k::bf16_to_fp32({hi}));
  if (x - vlo != vhi - x) return x - vlo < vhi - x ? lo : hi;
  return (lo & 1) ? hi : lo;
}

}  // namespace

TEST(Bf16, RoundToNearestEvenTies) {
  EXPECT_EQ(rne(0x3F800000), 0x3F80);  // 1.0 exact
  EXPECT_EQ(rne(0x3F808000), 0x3F80);  // 1 + 2^-8: halfway to 0x3F81, ties to even
  EXPECT_EQ(rne(0x3F818000), 0x3F82);  // halfway between 0x3F81 and 0x3F82: up to even
  EXPECT_EQ(rne(0x3F808001), 0x3F81);  // just above the tie
  EXPECT_EQ(rne(0x3F807FFF), 0x3F80);  // just below
  EXPECT_EQ(rne(0xBF808000), 0xBF80);  // negative ties the same way (magnitude)
  EXPECT_EQ(rne(0xBF818000), 0xBF82);
  EXPECT_EQ(rne(0x3FFF8000), 0x4000);  // the carry into the exponent
}

TEST(Bf16, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(k::fp32_to_bf16(inf).bits, 0x7F80);
  EXPECT_EQ(k::fp32_to_bf16(-inf).bits, 0xFF80);
  EXPECT_EQ(k::fp32_to_bf16(0.0f).bits, 0x0000);
  EXPECT_EQ(k::fp32_to_bf16(-0.0f).bits, 0x8000);
  // NaN stays NaN, quiet, sign kept, even when only low mantissa bits are set (a naive
  // rounding would carry that into inf or truncate it to inf).
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FBFFFFFu, 0xFF800001u, 0x7FFFFFFFu}) {
    const uint16_t h = rne(nan);
    EXPECT_TRUE(std::isnan(k::bf16_to_fp32({h}))) << std::hex << nan;
    EXPECT_TRUE(h & 0x0040) << std::hex << nan << " -> " << h;  // quiet bit
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
  }
  // Largest finite bf16 (0x7F7F, 3.3895e38): kept; above its half-step: inf; FLT_MAX: inf.
  EXPECT_EQ(rne(0x7F7F0000), 0x7F7F);
  EXPECT_EQ(rne(0x7F7F7FFF), 0x7F7F);
  EXPECT_EQ(rne(0x7F7F8000), 0x7F80);  // tie: 0x7F7F is odd, rounds to even = inf
  EXPECT_EQ(k::fp32_to_bf16(FLT_MAX).bits, 0x7F80);
  EXPECT_EQ(k::fp32_to_bf16(-FLT_MAX).bits, 0xFF80);
  // Denormals round like everything else (no flush to zero).
  EXPECT_EQ(rne(0x00000001), 0x0000);
  EXPECT_EQ(rne(0x00008000), 0x0000);  // tie, even
  EXPECT_EQ(rne(0x00018000), 0x0002);  // tie, odd -> up
  EXPECT_EQ(rne(0x00010000), 0x0001);  // smallest bf16 denormal, exact
  EXPECT_EQ(rne(0x007FFFFF), 0x0080);  // largest fp32 denormal -> FLT_MIN
  EXPECT_EQ(k::fp32_to_bf16(FLT_MIN).bits, 0x0080);
}

// Every bf16 converts to fp32 and back unchanged (NaNs: still NaN).
TEST(Bf16, RoundTripAllPatterns) {
  for (uint32_t b = 0; b < 65536; b++) {
    const float x = k::bf16_to_fp32({(uint16_t)b});
    const uint16_t back = k::fp32_to_bf16(x).bits;
    if (std::isnan(x))
      EXPECT_TRUE(std::isnan(k::bf16_to_fp32({back}))) << b;
    else
      ASSERT_EQ(back, b);
  }
}

// Random finite fp32 bit patterns against a reference nearest-even rounding; the array
// conversions give the scalar results.
TEST(Bf16, RandomPatternsAndArrays) {
  std::mt19937 gen(5);
  std::vector<float> x;
  while (x.size() < 200001) {
    const uint32_t u = gen();
    if ((u & 0x7F800000u) == 0x7F800000u) continue;  // inf / NaN: tested above
    ASSERT_EQ(rne(u), reference_rne(u)) << std::hex << u;
    x.push_back(from_bits(u));
  }
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  x.push_back(-std::numeric_limits<float>::infinity());
  std::vector<k::bf16> h(x.size());
  std::vector<float> back(x.size());
  k::fp32_to_bf16_array(h.data(), x.data(), (int64_t)x.size());
  k::bf16_to_fp32_array(back.data(), h.data(), (int64_t)x.size());
  for (size_t i = 0; i < x.size(); i++) {
    ASSERT_EQ(h[i].bits, k::fp32_to_bf16(x[i]).bits) << i;
    const uint32_t want = (uint32_t)h[i].bits << 16;
    ASSERT_EQ(std::memcmp(&back[i], &want, 4), 0) << i;
  }
}

// Stochastic rounding: always one of the two neighbours, exact values stay exact, and the
// mean over many draws is the fp32 value (within 5 standard deviations of the mean).
TEST(Bf16, StochasticRoundingIsUnbiased) {
  const int n = 200000;
  for (float x : {1.0f + 0.3f / 128, -3.7e-3f, 1234.567f, 0.9999f, 2.5e-39f /* denormal */}) {
    const uint32_t u = k::fp32_bits(x);
    const float lo = k::bf16_to_fp32({(uint16_t)(u >> 16)});
    const float hi = k::bf16_to_fp32({(uint16_t)((u >> 16) + 1)});
    const double p = ((double)x - lo) / ((double)hi - lo);  // probability of rounding away
    std::vector<float> in(n, x), out(n);
    std::vector<k::bf16> h(n);
    k::fp32_to_bf16_stochastic_array(h.data(), in.data(), n, 42, 7);
    k::bf16_to_fp32_array(out.data(), h.data(), n);
    double mean = 0;
    for (float v : out) {
      ASSERT_TRUE(v == lo || v == hi) << x << ": " << v;
      mean += v;
    }
    mean /= n;
    const double step = std::fabs((double)hi - lo);
    const double sigma = step * std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(mean, (double)x, 5 * sigma + step * std::ldexp(1.0, -16)) << x;
  }
  // Exact bf16 values, inf and NaN are kept whatever the random bits.
  for (uint32_t r : {0u, 0xFFFFu, 0x8000u, 0xFFFFFFFFu}) {
    EXPECT_EQ(k::fp32_to_bf16_stochastic(1.5f, r).bits, 0x3FC0);
    EXPECT_EQ(k::fp32_to_bf16_stochastic(-INFINITY, r).bits, 0xFF80);
    EXPECT_TRUE(std::isnan(k::bf16_to_fp32(k::fp32_to_bf16_stochastic(from_bits(0x7F800001), r))));
  }
}

// The random bits depend on (seed, index) only: a shard given its offset rounds exactly
// as the whole array does there; another seed rounds differently.
TEST(Bf16, StochasticArrayIsCounterBased) {
  const int n = 1001;
  std::vector<float> x(n);
  for (int i = 0; i < n; i++) x[i] = 1.0f + 0.001f * i;
  std::vector<k::bf16> whole(n), parts(n), other(n);
  k::fp32_to_bf16_stochastic_array(whole.data(), x.data(), n, 9, 0);
  k::fp32_to_bf16_stochastic_array(parts.data(), x.data(), 400, 9, 0);
  k::fp32_to_bf16_stochastic_array(parts.data() + 400, x.data() + 400, n - 400, 9, 400);
  k::fp32_to_bf16_stochastic_array(other.data(), x.data(), n, 10, 0);
  int same = 0;
  for (int i = 0; i < n; i++) {
    ASSERT_EQ(whole[i].bits, parts[i].bits) << i;
    same += whole[i].bits == other[i].bits;
  }
  EXPECT_LT(same, n);
}

// ---------------------------------------------------------------------------------------
// bf16gemm
// ---------------------------------------------------------------------------------------
namespace {

// Selects an engine for the scope of a test (TESSERA_BF16_ENGINE is read at every call).
class Engine {
 public:
  explicit Engine(bool portable) {
    if (portable)
      setenv("TESSERA_BF16_ENGINE", "portable", 1);
    else
      unsetenv("TESSERA_BF16_ENGINE");
  }
  ~Engine() { unsetenv("TESSERA_BF16_ENGINE"); }
};

using Threads = tessera::test_support::OmpThreads;

std::vector<k::bf16> random_bf16(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<k::bf16> v(n);
  for (auto& x : v) x = k::fp32_to_bf16(dist(gen));
  return v;
}

// One bf16gemm call checked entry by entry (and C's padding columns untouched);
// op(A) is M x K, op(B) K x N; pads widen the leading dimensions. Returns the failures.
int check(bool ta, bool tb, int M, int N, int K, float alpha, float beta, unsigned seed,
          int pad = 0) {
  const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad;
  const auto A = random_bf16((size_t)(ta ? K : M) * lda, seed);
  const auto B = random_bf16((size_t)(tb ? N : K) * ldb, seed + 1);
  return tessera::test::check_gemm16(
      k::bf16gemm, [](const k::bf16& x) { return (double)k::bf16_to_fp32(x); },
      std::string("engine=") + k::bf16gemm_engine(), ta, tb, M, N, K, alpha, beta, A, lda, B,
      ldb, pad);
}

bool cpu_has_bf16_engine() {
  unsetenv("TESSERA_BF16_ENGINE");
  return std::string(k::bf16gemm_engine()) != "portable";
}

// Runs `body` with the portable engine, then with AVX-512 BF16 (or says why not).
template <typename F>
void for_each_engine(F body) {
  {
    Engine e(true);
    ASSERT_STREQ(k::bf16gemm_engine(), "portable");
    body();
  }
  if (!cpu_has_bf16_engine()) {
    GTEST_SKIP() << "avx512bf16 engine skipped: this CPU lacks AVX-512 BF16 (portable checked)";
  }
  Engine e(false);
  ASSERT_STREQ(k::bf16gemm_engine(), "avx512bf16-8x48");
  body();
}

const std::pair<float, float> kAlphaBeta[] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.75f, 0.5f}};

// One shape, checked under the four transpose combinations by check().
struct Shape {
  int M, N, K;
  float alpha, beta;
  int pad;
};
void check_transposes(const std::vector<Shape>& shapes, unsigned seed) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (const Shape& s : shapes)
        ASSERT_EQ(check(ta, tb, s.M, s.N, s.K, s.alpha, s.beta, seed++, s.pad), 0);
}

}  // namespace

// Odd sizes (ragged tiles; odd K: a half pair) in each dimension, three alpha/beta.
TEST(Bf16Gemm, OddSizesAllTransposesAlphaBeta) {
  Threads one(1);
  std::vector<Shape> shapes;
  for (int s : {1, 2, 7, 17, 33, 49, 65, 100})
    for (const auto& [alpha, beta] : kAlphaBeta)
      for (const auto& mnk : {std::array{s, 33, 65}, {65, s, 17}, {17, 100, s}, {s, s, s}})
        shapes.push_back({mnk[0], mnk[1], mnk[2], alpha, beta, 0});
  for_each_engine([&] { check_transposes(shapes, 1); });
}

// Strided views, deep K (several K blocks, odd), GPT-2 widths: forward NT and dWeight TN.
TEST(Bf16Gemm, LeadingDimensionsAndDeepK) {
  Threads one(1);
  for_each_engine([] {
    check_transposes({{65, 100, 33, -0.75f, 0.5f, 5}, {24, 97, 1601, 1.0f, 1.0f, 3}}, 100);
    ASSERT_EQ(check(false, true, 16, 2304, 768, 1.0f, 0.0f, 7), 0);
    ASSERT_EQ(check(true, false, 200, 48, 1030, 1.0f, 1.0f, 8), 0);
  });
}

// Two threads: N split and M split, every transpose; inside a parallel region (one thread).
TEST(Bf16Gemm, Threads) {
  Threads two(2);
  for_each_engine([] {
    check_transposes({{40, 1000, 200, 1.0f, 0.0f, 1}, {1000, 40, 257, -0.75f, 0.5f, 0}}, 200);
    int failures = 0;
#pragma omp parallel reduction(+ : failures)
    failures += check(false, true, 64, 64, 64, 1.0f, 0.0f, 300 + omp_get_thread_num(), 128);
    ASSERT_EQ(failures, 0);
  });
}

// K-contiguous packing (op(A) of NN/NT, op(B) of NT) transposes 16 lines x 16 pairs of K
// at a time: ragged line blocks (A's slivers of 8, B's of 16/32/48) and pair blocks.
TEST(Bf16Gemm, TransposePackingEdges) {
  Threads one(1);
  for_each_engine([] {
    for (int K : {31, 32, 33, 63, 64, 65})
      for (int mn : {15, 16, 17, 47, 48, 49}) {
        ASSERT_EQ(check(false, true, mn, 97 - mn, K, 1.0f, 0.0f, 400 + K + mn), 0);
        ASSERT_EQ(check(false, false, 97 - mn, mn, K, -0.75f, 0.5f, 500 + K + mn, 3), 0);
      }
  });
}

// Degenerate shapes as sgemm does them: K == 0 scales C by beta, alpha == 0 reads neither
// A nor B (null here), M or N == 0 does nothing.
TEST(Bf16Gemm, DegenerateShapesAsSgemm) {
  for_each_engine([] {
    for (const Shape& s : {Shape{2, 2, 0, 1.0f, 0.5f, 0}, {2, 2, 3, 0.0f, 0.0f, 0},
                           {0, 2, 3, 1.0f, 0.0f, 0}, {2, 0, 3, 1.0f, 0.0f, 0}}) {
      std::vector<float> want = {1, 2, 3, 4};
      if (s.beta == 0.0f && s.M > 0 && s.N > 0) want.assign(4, std::numeric_limits<float>::quiet_NaN());
      std::vector<float> got = want;
      k::sgemm(false, false, s.M, s.N, s.K, s.alpha, nullptr, 3, nullptr, 2, s.beta, want.data(), 2);
      k::bf16gemm(false, false, s.M, s.N, s.K, s.alpha, nullptr, 3, nullptr, 2, s.beta, got.data(), 2);
      EXPECT_EQ(got, want) << s.M << "x" << s.N << "x" << s.K;
    }
  });
}
