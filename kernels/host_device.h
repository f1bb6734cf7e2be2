// TESSERA_HD marks a small inline function that both backends share (the bf16 and fp16
// roundings, the counter-based random bits): one definition, so the GPU rounds exactly as
// the CPU does. Under nvcc it is __host__ __device__; for every other compiler, nothing.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TESSERA_HD __host__ __device__
#else
#define TESSERA_HD
#endif

namespace tessera::kernels {

// The bits of a float and back (std::bit_cast, which nvcc's device code lacks).
TESSERA_HD inline uint32_t float_to_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}
TESSERA_HD inline float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// Leading zero bits of a nonzero 32-bit value.
TESSERA_HD inline int count_leading_zeros(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __clz(u);
#else
  return __builtin_clz(u);
#endif
}

}  // namespace tessera::kernels
