// exp and tanh written so that GCC vectorises them inside `#pragma omp simd` loops.
//
// The C library's expf/tanhf are scalar calls here (glibc exposes its vector versions
// only under -ffast-math), and the softmax of a 50k vocabulary or the GELU of every MLP
// activation spend most of their time in them. These are the classic Cephes-style
// float versions: exact to about 2 ulp over the range that matters, branch-free.
// The double overloads call the C library: they serve the finite-difference tests.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tessera::kernels {

// exp(x) for float: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial,
// then 2^n built in the exponent bits. Inputs below -87.3 give 0, above 88.7 give +inf.
#pragma omp declare simd notinbranch
inline float vexp(float x) {
  x = x < -87.33f ? -87.33f : x;
  x = x > 88.72f ? 88.72f : x;
  // n = round(x / ln2), to nearest even, by the 1.5 * 2^23 trick: adding it pushes the
  // fraction bits out of the float, subtracting brings the rounded value back. Not
  // __builtin_roundevenf: GCC has no vector form of it, so loops calling vexp would stay
  // scalar (docs/performance.md).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // r = x - n ln2 in two steps (Cody-Waite), keeping r exact to float precision.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;  // 2^n for n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x <= -87.33f ? 0.0f : p * scale;
}
inline double vexp(double x) { return std::exp(x); }

// tanh as Cephes' tanhf: an odd polynomial for |x| < 0.625, where 1 - 2 / (exp(2x) + 1)
// would cancel digits, and that formula (saturating cleanly at +-1) elsewhere.
#pragma omp declare simd notinbranch
inline float vtanh(float x) {
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = 1.0f - 2.0f / (vexp(2.0f * x) + 1.0f);
  return std::fabs(x) < 0.625f ? small : large;
}
inline double vtanh(double x) { return std::tanh(x); }

}  // namespace tessera::kernels
