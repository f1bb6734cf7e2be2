// bfloat16 for the CPU backend: the storage type and the casts from and to fp32 (the
// bf16 GEMM is in gemm_bf16.h).
//
// bf16 is the top half of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa bits): the same
// range as fp32, 8 significant bits. Tessera stores it as a uint16_t wrapper and computes
// in fp32 (every bf16 converts to fp32 exactly).
//
// Rounding fp32 -> bf16:
//  - fp32_to_bf16: round to nearest, ties to even (as torch and the hardware convert);
//    overflow past bf16's largest finite value (0x7F7F, about 3.39e38) rounds to inf;
//    NaN stays NaN (quiet, sign kept); denormals round like any other value.
//  - fp32_to_bf16_stochastic: rounds up with probability equal to the fraction of the way
//    to the next bf16 (from 16 random bits), so E[bf16_to_fp32(result)] == x up to 2^-16
//    of one bf16 step: small parameter updates are not lost on average. NaN and inf are
//    kept; a finite value past the largest bf16 may round to inf.
//
#pragma once
#include <cstdint>

#include "kernels/host_device.h"

namespace tessera::kernels {

// A bfloat16 value, stored as its 16 bits (trivially copyable, no arithmetic).
struct bf16 {
  uint16_t bits;
};

TESSERA_HD inline uint32_t fp32_bits(float x) { return float_to_bits(x); }

// bf16 -> fp32, exact.
TESSERA_HD inline float bf16_to_fp32(bf16 h) { return bits_to_float((uint32_t)h.bits << 16); }

// fp32 -> bf16, round to nearest even; NaN -> quiet NaN.
TESSERA_HD inline bf16 fp32_to_bf16(float x) {
  const uint32_t u = fp32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{(uint16_t)((u >> 16) | 0x0040u)};
  return bf16{(uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

// fp32 -> bf16, stochastic rounding with the low 16 bits of `random` (uniform bits).
TESSERA_HD inline bf16 fp32_to_bf16_stochastic(float x, uint32_t random) {
  const uint32_t u = fp32_bits(x);
  if ((u & 0x7FFFFFFFu) >= 0x7F800000u)  // inf as is, NaN quiet
    return bf16{(uint16_t)((u >> 16) | ((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x0040u : 0u))};
  return bf16{(uint16_t)((u + (random & 0xFFFFu)) >> 16)};
}

// 32 uniform random bits for element `index` of the stream `seed` (a counter-based hash:
// any slice of an array gets the same bits as the whole, whatever the threads).
TESSERA_HD inline uint32_t bf16_random_bits(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index;  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)((z ^ (z >> 31)) >> 32);
}

// out[n] = fp32_to_bf16(in[n])
void fp32_to_bf16_array(bf16* out, const float* in, int64_t n);
// out[n] = bf16_to_fp32(in[n])
void bf16_to_fp32_array(float* out, const bf16* in, int64_t n);
// out[i] = fp32_to_bf16_stochastic(in[i], bf16_random_bits(seed, offset + i)), i < n
// (offset: the index of in[0] in the logical tensor, so shards round like the whole).
void fp32_to_bf16_stochastic_array(bf16* out, const float* in, int64_t n, uint64_t seed,
                                   uint64_t offset);

}  // namespace tessera::kernels
