#include "framework/util/peak.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace tessera {

namespace {
// 16 floats: GCC emits one zmm FMA per operation under AVX-512, two ymm ones under AVX2.
typedef float v16 __attribute__((vector_size(64)));
constexpr int kChains = 12;  // independent accumulators hide the FMA latency (4 cycles x 2 pipes)
constexpr long kInner = 1 << 16;

// kInner iterations of kChains FMAs on 16 lanes; returns something so it is not elided.
float fma_burst(float seed) {
  v16 acc[kChains];
  v16 mul, add;
  // acc -> acc * 0.999 + 0.001 converges to 1: values stay normal (denormals are slow).
  for (int i = 0; i < 16; i++) {
    mul[i] = 0.999f;
    add[i] = 0.001f;
  }
  for (int c = 0; c < kChains; c++)
    for (int i = 0; i < 16; i++) acc[c][i] = 1.0f + seed + (float)c;
  for (long it = 0; it < kInner; it++)
    for (int c = 0; c < kChains; c++) acc[c] = acc[c] * mul + add;
  float total = 0;
  for (int c = 0; c < kChains; c++)
    for (int i = 0; i < 16; i++) total += acc[c][i];
  return total;
}
}  // namespace

double measure_fp32_peak_flops(double seconds) {
  // The rate of the best of many short slices: on a shared machine another process may
  // hold a core for part of the time, and the peak is what the cores do when they run.
  constexpr double kSlice = 0.01;
  const double flops_per_burst = 2.0 * 16 * kChains * (double)kInner;
  volatile float sink = 0;
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    double slice_flops = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : slice_flops)
    {
      float local = 0;
      long bursts = 0;
      while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < kSlice) {
        local += fma_burst((float)omp_get_thread_num());
        bursts++;
      }
      sink = sink + local;
      slice_flops += flops_per_burst * (double)bursts;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, slice_flops / dt);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
  return best;
}

double measure_triad_bandwidth(int64_t n, double seconds) {
  std::vector<float> a(n), b(n);
#pragma omp parallel for schedule(static)  // first touch on the threads that stream them
  for (int64_t i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f;
  const float scale = 1e-3f;
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = a[i] + scale * b[i];
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 12.0 * (double)n / dt);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
  volatile float sink = a[n / 2];  // the result is used
  (void)sink;
  return best;
}

}  // namespace tessera
