// Dropout with a counter-based mask: element (n, c) of a [N, C] activation is kept and
// scaled by 1 / (1 - p), or dropped, by a uniform number hashed from (seed, its logical
// position): row n is position n % T of sample first_sample + n / T, column c is logical
// column col0 + c of cols. So a tensor-parallel slice, a pipeline stage and any split of
// the global batch draw exactly the numbers one process draws for the whole, and the GPU
// (which shares this header) the numbers the CPU draws. p = 0: no dropout.
// LoRA uses it on the adapters' input (framework/model/linear.h).
#pragma once
#include <cstdint>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/host_device.h"

namespace tessera::kernels {

struct DropoutMask {
  float p = 0;
  uint64_t seed = 0;  // of the layer, target and step
  int64_t first_sample = 0;
  int T = 1;
  int64_t col0 = 0, cols = 0;
};

// 0 (dropped) or 1 / (1 - p) (kept) for element (n, c).
TESSERA_HD inline float dropout_factor(const DropoutMask& d, int64_t n, int64_t c) {
  const int64_t position = (d.first_sample + n / d.T) * d.T + n % d.T;
  const uint64_t index = (uint64_t)(position * d.cols + d.col0 + c);
  const float u = (float)(bf16_random_bits(d.seed, index) >> 8) * 0x1p-24f;  // [0, 1)
  return u < d.p ? 0.0f : 1.0f / (1.0f - d.p);
}

}  // namespace tessera::kernels
