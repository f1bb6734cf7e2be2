#include "framework/util/peak.h"

#include <omp.h>

#include <chrono>

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
  const double flops_per_burst = 2.0 * 16 * kChains * (double)kInner;
  double total_flops = 0;
  volatile float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
#pragma omp parallel reduction(+ : total_flops)
  {
    const auto start = std::chrono::steady_clock::now();
    float local = 0;
    long bursts = 0;
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
           seconds) {
      local += fma_burst((float)omp_get_thread_num());
      bursts++;
    }
    sink = sink + local;
    total_flops += flops_per_burst * (double)bursts;
  }
  elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return total_flops / elapsed;
}

}  // namespace tessera
