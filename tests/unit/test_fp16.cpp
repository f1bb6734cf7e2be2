// fp16 casts (kernels/cpu/cast_fp16.h) against references computed from the IEEE formula,
// the array conversions against the scalar ones, fp16gemm against a double-precision
// reference, and has_nonfinite.
//
// GEMM tolerance (as test_bf16.cpp): the reference multiplies the SAME fp16 values in
// double, so the only error is the fp32 summation: each product of two fp16 is exact in
// fp32 (11 x 11 significant bits), and a length-K sum in any order is within gamma_K ~ K*u,
// u = 2^-24, of sum_k |a_k b_k| (Higham 3.1), plus a few roundings for alpha and beta.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/gemm_fp16.h"
#include "kernels/ops.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/gemm16_check.h"

namespace k = tessera::kernels;

namespace {

using tessera::test::from_bits;
uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
uint16_t h(float x) { return k::fp32_to_fp16(x).bits; }

// The value of a fp16 bit pattern from the formula: (-1)^s 2^(e-15) (1 + m/1024), or
// (-1)^s 2^-14 (m/1024) for e == 0; inf or NaN for e == 31.
double formula(uint16_t b) {
  const int s = b >> 15, e = (b >> 10) & 31, m = b & 1023;
  double v;
  if (e == 31)
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    v = e == 0 ? std::ldexp((double)m, -24) : std::ldexp(1024.0 + m, e - 25);
  return s ? -v : v;
}

// Reference rounding of a finite fp32 to fp16 in double: the two finite fp16 neighbours
// from a table of the formula's values (0x7C00 stands for 2^16 past 65504, as IEEE
// rounding with an unbounded exponent would give), nearest, ties to the even pattern.
uint16_t reference_round(float x) {
  static const std::vector<double> table = [] {
    std::vector<double> t;
    for (uint16_t b = 0; b < 0x7C00; b++) t.push_back(formula(b));
    t.push_back(65536.0);
    return t;
  }();
  const double a = std::fabs((double)x);
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (a >= 65536.0) return sign | 0x7C00;
  const uint16_t hi = (uint16_t)(std::upper_bound(table.begin(), table.end(), a) - table.begin());
  const uint16_t lo = hi - 1;  // table[lo] <= a < table[hi]
  const double dlo = a - table[lo], dhi = table[hi] - a;
  const uint16_t r = dlo != dhi ? (dlo < dhi ? lo : hi) : ((lo & 1) ? hi : lo);
  return sign | r;
}

}  // namespace

// (a) Every fp16 bit pattern converts to the formula's value exactly (NaN: a quiet NaN
// with the sign kept).
TEST(Fp16, ToFp32AllPatternsMatchFormula) {
  for (uint32_t b = 0; b < 65536; b++) {
    const float got = k::fp16_to_fp32({(uint16_t)b});
    const double want = formula((uint16_t)b);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << b;
      ASSERT_TRUE(bits(got) & 0x00400000u) << std::hex << b;  // quiet
      ASSERT_EQ(bits(got) >> 31, b >> 15) << std::hex << b;
    } else {
      ASSERT_EQ((double)got, want) << std::hex << b;
      ASSERT_EQ(std::signbit(got), (b >> 15) != 0) << std::hex << b;  // -0 too
    }
  }
}

// (b) Every fp16 converts to fp32 and back unchanged; quiet NaNs keep their bits,
// signalling ones come back quieted.
TEST(Fp16, RoundTripAllPatterns) {
  for (uint32_t b = 0; b < 65536; b++) {
    const uint16_t back = h(k::fp16_to_fp32({(uint16_t)b}));
    const bool nan = (b & 0x7C00) == 0x7C00 && (b & 0x3FF);
    ASSERT_EQ(back, nan ? (b | 0x200) : b) << std::hex << b;
  }
}

// (c) Rounding between adjacent halves, overflow, denormals, underflow, specials.
TEST(Fp16, RoundingCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(h(1.0f), 0x3C00);
  EXPECT_EQ(h(1.0f + 0x1p-11f), 0x3C00);  // tie between 0x3C00 and 0x3C01: even
  EXPECT_EQ(h(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie between 0x3C01 and 0x3C02: even
  EXPECT_EQ(h(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3C01);  // just above the tie
  EXPECT_EQ(h(std::nextafter(1.0f + 3 * 0x1p-11f, 0.0f)), 0x3C01);  // just below
  EXPECT_EQ(h(-(1.0f + 0x1p-11f)), 0xBC00);
  EXPECT_EQ(h(-(1.0f + 3 * 0x1p-11f)), 0xBC02);
  EXPECT_EQ(h(2.0f - 0x1p-11f), 0x4000);  // tie: 0x3BFF is odd, the carry enters the exponent
  EXPECT_EQ(h(0.1f), 0x2E66);
  // Overflow: 65504 is the largest finite; the boundary is 65520 (a tie, to the even inf).
  EXPECT_EQ(h(65504.0f), 0x7BFF);
  EXPECT_EQ(h(65519.99f), 0x7BFF);
  EXPECT_EQ(h(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(h(65520.0f), 0x7C00);
  EXPECT_EQ(h(-65520.0f), 0xFC00);
  EXPECT_EQ(h(FLT_MAX), 0x7C00);
  EXPECT_EQ(h(-FLT_MAX), 0xFC00);
  EXPECT_EQ(h(inf), 0x7C00);
  EXPECT_EQ(h(-inf), 0xFC00);
  // Denormals: m * 2^-24, rounded to nearest even m.
  EXPECT_EQ(h(0x1p-24f), 0x0001);
  EXPECT_EQ(h(0x1p-25f), 0x0000);  // tie with zero: even
  EXPECT_EQ(h(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(h(3 * 0x1p-25f), 0x0002);  // 1.5: tie, to 2
  EXPECT_EQ(h(5 * 0x1p-25f), 0x0002);  // 2.5: tie, to 2
  EXPECT_EQ(h(1023 * 0x1p-24f), 0x03FF);  // largest denormal
  EXPECT_EQ(h(1023.5f * 0x1p-24f), 0x0400);  // tie: to the smallest normal
  EXPECT_EQ(h(std::nextafter(0x1p-14f, 0.0f)), 0x0400);
  EXPECT_EQ(h(-7 * 0x1p-24f), 0x8007);
  // Underflow to zero, sign kept.
  EXPECT_EQ(h(0x1p-26f), 0x0000);
  EXPECT_EQ(h(-0x1p-26f), 0x8000);
  EXPECT_EQ(h(FLT_MIN), 0x0000);
  EXPECT_EQ(h(-from_bits(1)), 0x8000);  // fp32 denormal
  EXPECT_EQ(h(0.0f), 0x0000);
  EXPECT_EQ(h(-0.0f), 0x8000);
  // NaN: quiet, sign kept, top payload bits kept (a naive rounding would give inf).
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FBFFFFFu, 0xFF800001u, 0x7FFFFFFFu}) {
    const uint16_t r = h(from_bits(nan));
    EXPECT_EQ(r & 0x7E00, 0x7E00) << std::hex << nan << " -> " << r;
    EXPECT_EQ(r & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
    EXPECT_EQ(r & 0x1FF, (nan >> 13) & 0x1FF) << std::hex << nan;
  }
}

// (c) Random fp32 against the reference rounding: any bit pattern (all exponents), and
// exponents drawn in fp16's range and just around it (where the interesting cases are).
TEST(Fp16, RandomFloatsMatchReferenceRounding) {
  std::mt19937 gen(11);
  std::uniform_int_distribution<uint32_t> exponent(95, 150);
  for (int i = 0; i < 1000000; i++) {
    uint32_t u = gen();
    if (i % 2) u = (u & 0x807FFFFFu) | (exponent(gen) << 23);
    if ((u & 0x7F800000u) == 0x7F800000u) continue;  // inf / NaN: above
    ASSERT_EQ(h(from_bits(u)), reference_round(from_bits(u))) << std::hex << u;
  }
}

// (d) The array conversions give the scalar bits, whatever the length (the vector body
// and the scalar tail), for every fp16 pattern and NaN payloads.
TEST(Fp16, ArraysMatchScalar) {
  std::mt19937 gen(3);
  std::vector<float> x(1000003);
  for (size_t i = 0; i < x.size(); i++) {
    uint32_t u = gen();
    if (i % 3) u = (u & 0x807FFFFFu) | ((95 + gen() % 56) << 23);
    x[i] = from_bits(u);
  }
  const uint32_t nans[] = {0x7FC00000u, 0x7F800001u, 0xFFBFFFFFu, 0x7F802000u};
  for (int i = 0; i < 4; i++) x[7 + i] = from_bits(nans[i]);  // in the first vector
  std::vector<k::fp16> all(65536);
  for (uint32_t b = 0; b < 65536; b++) all[b] = {(uint16_t)b};
  for (int64_t n : {0, 1, 15, 16, 17, 33, 1001, 1000003}) {
    std::vector<k::fp16> out(n + 1, k::fp16{0xABCD});
    k::fp32_to_fp16_array(out.data(), x.data(), n);
    for (int64_t i = 0; i < n; i++)
      ASSERT_EQ(out[i].bits, h(x[i])) << "n=" << n << " i=" << i << std::hex << " x=" << bits(x[i]);
    ASSERT_EQ(out[n].bits, 0xABCD) << "wrote past n=" << n;
    const int64_t m = std::min<int64_t>(n, 65536);
    std::vector<float> back(m + 1, 5.0f);
    k::fp16_to_fp32_array(back.data(), all.data() + (65536 - m), m);
    for (int64_t i = 0; i < m; i++)
      ASSERT_EQ(bits(back[i]), bits(k::fp16_to_fp32(all[65536 - m + i])))
          << std::hex << 65536 - m + i;
    ASSERT_EQ(back[m], 5.0f);
  }
  std::vector<float> back(65536);
  k::fp16_to_fp32_array(back.data(), all.data(), 65536);
  for (uint32_t b = 0; b < 65536; b++)
    ASSERT_EQ(bits(back[b]), bits(k::fp16_to_fp32(all[b]))) << std::hex << b;
  std::vector<float> from_all(65536);
  for (uint32_t b = 0; b < 65536; b++) from_all[b] = k::fp16_to_fp32(all[b]);
  std::vector<k::fp16> out(65536);
  k::fp32_to_fp16_array(out.data(), from_all.data(), 65536);
  for (uint32_t b = 0; b < 65536; b++) ASSERT_EQ(out[b].bits, h(from_all[b])) << std::hex << b;
}

// ---------------------------------------------------------------------------------------
// fp16gemm
// ---------------------------------------------------------------------------------------
namespace {

std::vector<k::fp16> random_fp16(size_t n, unsigned seed, float scale) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<k::fp16> v(n);
  for (auto& x : v) x = k::fp32_to_fp16(dist(gen));
  return v;
}

// One fp16gemm call checked entry by entry (C's padding columns untouched; beta == 0:
// C's NaNs never read). op(A) is M x K, op(B) K x N. Returns the failures.
int check(bool ta, bool tb, int M, int N, int K, float alpha, float beta, unsigned seed,
          int pad, float scale) {
  const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad;
  const auto A = random_fp16((size_t)(ta ? K : M) * lda, seed, scale);
  const auto B = random_fp16((size_t)(tb ? N : K) * ldb, seed + 1, scale);
  return tessera::test::check_gemm16(
      k::fp16gemm, [](const k::fp16& x) { return (double)formula(x.bits); }, "fp16gemm", ta, tb,
      M, N, K, alpha, beta, A, lda, B, ldb, pad);
}

}  // namespace

// (e) All four transposes, beta 0 and 1 (and a general alpha, beta), odd sizes, strided
// views, values from tiny (denormal products) to large (products near 2^24).
TEST(Fp16Gemm, AllTransposesBetaZeroAndOne) {
  unsigned seed = 1;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.75f, 0.5f}})
        for (const auto& [M, N, K, pad] : {std::array{1, 1, 1, 0}, {7, 33, 65, 0}, {65, 17, 100, 3},
                                          {17, 100, 1, 1}, {48, 49, 257, 0}})
          for (float scale : {1.0f, 4000.0f, 0.01f})
            ASSERT_EQ(check(ta, tb, M, N, K, alpha, beta, seed++, pad, scale), 0);
}

// Degenerate shapes as sgemm does them: K == 0 scales C by beta, alpha == 0 reads neither
// A nor B (null here), M or N == 0 does nothing.
TEST(Fp16Gemm, DegenerateShapesAsSgemm) {
  struct S { int M, N, K; float alpha, beta; };
  for (const S& s : {S{2, 2, 0, 1.0f, 0.5f}, {2, 2, 3, 0.0f, 0.0f}, {0, 2, 3, 1.0f, 0.0f},
                     {2, 0, 3, 1.0f, 0.0f}}) {
    std::vector<float> want = {1, 2, 3, 4};
    if (s.beta == 0.0f && s.M > 0 && s.N > 0)
      want.assign(4, std::numeric_limits<float>::quiet_NaN());
    std::vector<float> got = want;
    k::sgemm(false, false, s.M, s.N, s.K, s.alpha, nullptr, 3, nullptr, 2, s.beta, want.data(), 2);
    k::fp16gemm(false, false, s.M, s.N, s.K, s.alpha, nullptr, 3, nullptr, 2, s.beta, got.data(),
                2);
    EXPECT_EQ(got, want) << s.M << "x" << s.N << "x" << s.K;
  }
}

// (f) has_nonfinite: none; inf, -inf or NaN at the first, a middle and the last position
// (in several 4096 blocks); FLT_MAX and denormals are finite.
TEST(Fp16, HasNonfinite) {
  for (int64_t n : {1, 100, 4096, 4097, 100000}) {
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; i++)
      x[i] = (i % 3 == 0) ? FLT_MAX : (i % 3 == 1 ? -from_bits(1) : 0.5f);
    EXPECT_FALSE(k::has_nonfinite(x.data(), n)) << n;
    for (int64_t pos : {int64_t{0}, n / 2, n - 1})
      for (float bad : {INFINITY, -INFINITY, NAN, from_bits(0xFF800001u)}) {
        const float keep = x[pos];
        x[pos] = bad;
        EXPECT_TRUE(k::has_nonfinite(x.data(), n)) << "n=" << n << " pos=" << pos << " " << bad;
        x[pos] = keep;
      }
  }
  EXPECT_FALSE(k::has_nonfinite(nullptr, 0));
}
