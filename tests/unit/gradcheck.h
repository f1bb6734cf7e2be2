// Finite-difference checks of the ops' backward passes, in double precision.
//
// For an op y = f(x) we take the scalar L = sum(y * R) with a fixed random R; the
// backward called with dout = R must give dL/dx, which we also estimate as
// (L(x + h e_i) - L(x - h e_i)) / 2h for every element i.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace tessera::test {

using Vec = std::vector<double>;

inline Vec random_vec(size_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Compares `analytic` with finite differences of `loss` with respect to `x`.
inline void expect_gradient(const char* what, Vec& x, const Vec& analytic,
                            const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), analytic.size());
  const double h = 1e-6;
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < x.size(); i++) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * h);
    max_err = std::max(max_err, std::abs(numeric - analytic[i]));
    max_ref = std::max(max_ref, std::abs(numeric));
  }
  EXPECT_GT(max_ref, 0.0) << what << ": gradient is identically zero, the check is vacuous";
  EXPECT_LE(max_err, 1e-6 * std::max(1.0, max_ref)) << what << ": max |analytic - numeric| = "
                                                     << max_err << " (max |numeric| " << max_ref
                                                     << ")";
}

}  // namespace tessera::test
