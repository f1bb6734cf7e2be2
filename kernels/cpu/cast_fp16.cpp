// Array casts between fp32 and fp16 (see cast_fp16.h for the contract).
//
// The array conversions use AVX-512F's VCVTPS2PH (immediate: round to nearest even, not
// MXCSR's mode) and VCVTPH2PS, 16 values an instruction, compiled for AVX-512F whatever the
// build flags (#pragma GCC target below; the all-lanes maskz forms, as the plain ones trip
// GCC 12's false maybe-uninitialized warning) and run only when cpuid reports it; the tail
// and other CPUs take the scalar functions. The hardware gives the scalar functions' bits:
// denormal results are kept (VCVTPS2PH ignores MXCSR.FTZ; a fp32 denormal input, which DAZ
// would zero, rounds to a signed zero either way), and NaNs are quieted with their top
// payload bits kept, as fp32_to_fp16 and fp16_to_fp32 do (tests/unit/test_fp16.cpp checks).
#include "kernels/cpu/cast_fp16.h"

#include <immintrin.h>


namespace tessera::kernels {

namespace {

#pragma GCC push_options
#pragma GCC target("avx2,f16c,avx512f")

// out[i] = fp32_to_fp16(in[i]) for i < n - n % 16, 16 at a time; returns that count.
int64_t fp32_to_fp16_avx512(uint16_t* out, const float* in, int64_t n) {
  const int64_t n16 = n - n % 16;
  for (int64_t i = 0; i < n16; i += 16) {
    const __m256i h =
        _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256((__m256i*)(out + i), h);
  }
  return n16;
}

// out[i] = fp16_to_fp32(in[i]) for i < n - n % 16, 16 at a time; returns that count.
int64_t fp16_to_fp32_avx512(float* out, const uint16_t* in, int64_t n) {
  const int64_t n16 = n - n % 16;
  for (int64_t i = 0; i < n16; i += 16)
    _mm512_storeu_ps(out + i,
                     _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256((const __m256i*)(in + i))));
  return n16;
}

#pragma GCC pop_options

bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

}  // namespace

void fp32_to_fp16_array(fp16* out, const float* in, int64_t n) {
  int64_t i = cpu_has_avx512f() && n >= 16 ? fp32_to_fp16_avx512(&out->bits, in, n) : 0;
  for (; i < n; i++) out[i] = fp32_to_fp16(in[i]);
}

void fp16_to_fp32_array(float* out, const fp16* in, int64_t n) {
  int64_t i = cpu_has_avx512f() && n >= 16 ? fp16_to_fp32_avx512(out, &in->bits, n) : 0;
  for (; i < n; i++) out[i] = fp16_to_fp32(in[i]);
}

}  // namespace tessera::kernels
