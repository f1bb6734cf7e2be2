// IEEE half precision (fp16) for the CPU backend: the storage type and the casts from and
// to fp32 (the fp16 GEMM is in gemm_fp16.h).
//
// fp16 is IEEE 754 binary16 (1 sign, 5 exponent, 10 mantissa bits): 11 significant bits,
// largest finite value 65504, smallest normal 2^-14, denormals down to 2^-24. Tessera
// stores it as a uint16_t wrapper and computes in fp32 (every fp16 converts to fp32
// exactly, denormals included).
//
// Rounding fp32 -> fp16 (fp32_to_fp16, the same bits as F16C / AVX-512 VCVTPS2PH with
// round-to-nearest-even and as torch's .half()):
//  - round to nearest, ties to even;
//  - overflow: a magnitude at or past 65520 (the midpoint between 65504 and 2^16) becomes
//    +-inf; 65519.99 still rounds to 65504;
//  - values in fp16's denormal range round correctly to fp16 denormals (no flush to zero);
//    below half of 2^-24 (and at it: the tie goes to the even zero) they become zero with
//    the sign kept;
//  - NaN stays NaN: quiet, sign kept, the top 9 payload bits kept.
// The scalar functions are portable integer code (no _Float16, no F16C): the same bits on
// every compiler and CPU. The array functions use AVX-512F's conversions where cpuid
// reports them (compiled for them whatever the build flags) and the scalar loop elsewhere;
// both give the scalar functions' bits.
#pragma once
#include <cstdint>

#include "kernels/host_device.h"

namespace tessera::kernels {

// A half-precision value, stored as its 16 bits (trivially copyable, no arithmetic).
struct fp16 {
  uint16_t bits;
};


// fp16 -> fp32, exact (denormals too); inf stays inf; NaN -> quiet NaN, sign and payload kept.
TESSERA_HD inline float fp16_to_fp32(fp16 h) {
  const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16;
  const uint32_t e = (h.bits >> 10) & 0x1Fu, m = h.bits & 0x3FFu;
  if (e == 0x1F)  // inf, NaN (quieted, as VCVTPH2PS does)
    return bits_to_float(sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0u));
  if (e == 0) {  // zero, denormal m * 2^-24: normalise m so that its leading 1 is bit 10
    if (m == 0) return bits_to_float(sign);
    const int shift = count_leading_zeros(m) - 21;  // 1..10
    const uint32_t exp = (uint32_t)(113 - shift);  // 2^-14 is fp32 exponent 113
    return bits_to_float(sign | (exp << 23) | (((m << shift) & 0x3FFu) << 13));
  }
  return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));  // rebias 15 -> 127
}

// fp32 -> fp16, round to nearest even; |x| >= 65520 -> inf; NaN -> quiet NaN.
TESSERA_HD inline fp16 fp32_to_fp16(float x) {
  const uint32_t u = float_to_bits(x);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return fp16{(uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu))};
  if (a >= 0x477FF000u) return fp16{(uint16_t)(sign | 0x7C00u)};  // 65520 and up, inf
  if (a >= 0x38800000u)  // fp16 normal (2^-14 and up): rebias, round off 13 bits
    return fp16{(uint16_t)(sign | ((a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13))};
  if (a <= 0x33000000u) return fp16{sign};  // up to 2^-25 (a tie with the even zero): zero
  // fp16 denormal: |x| / 2^-24 = mant * 2^(e - 126), e in 102..112, rounded to an integer
  // (1024 is the smallest normal's encoding, which the carry gives correctly).
  const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
  const int shift = 126 - (int)(a >> 23);  // 14..24
  const uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
  return fp16{(uint16_t)(sign | (q + (rem > half || (rem == half && (q & 1u)))))};
}

// out[i] = fp32_to_fp16(in[i]), i < n
void fp32_to_fp16_array(fp16* out, const float* in, int64_t n);
// out[i] = fp16_to_fp32(in[i]), i < n
void fp16_to_fp32_array(float* out, const fp16* in, int64_t n);

}  // namespace tessera::kernels
