// Reductions over whole arrays: the sum of squares of the gradient norm and the
// non-finite check of fp16 loss scaling (ops.h).
#include <cstdint>

#include "kernels/cpu/cast_fp16.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
double sum_squares(const T* x, int64_t n) {
  double total = 0.0;
#pragma omp parallel for simd reduction(+ : total) schedule(static)
  for (int64_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
  return total;
}

bool has_nonfinite(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;  // vectorised OR over a block, then an early exit
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t end = i0 + kBlock < n ? i0 + kBlock : n;
    uint32_t any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t i = i0; i < end; i++)
      any |= (uint32_t)((float_to_bits(x[i]) & 0x7F800000u) == 0x7F800000u);
    if (any) return true;
  }
  return false;
}

#define TESSERA_INSTANTIATE(T) \
  template double sum_squares<T>(const T*, int64_t);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
