// Array casts between fp32 and bf16 (see cast_bf16.h): plain loops over the inline scalar
// casts, which GCC vectorises.
#include "kernels/cpu/cast_bf16.h"

namespace tessera::kernels {

void fp32_to_bf16_array(bf16* out, const float* in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) out[i] = fp32_to_bf16(in[i]);
}

void bf16_to_fp32_array(float* out, const bf16* in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) out[i] = bf16_to_fp32(in[i]);
}

void fp32_to_bf16_stochastic_array(bf16* out, const float* in, int64_t n, uint64_t seed,
                                   uint64_t offset) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++)
    out[i] = fp32_to_bf16_stochastic(in[i], bf16_random_bits(seed, offset + (uint64_t)i));
}

}  // namespace tessera::kernels
