// Residual add (ops.h: residual_forward).
// Written so that GCC vectorises the loop under -march=native; OpenMP splits it across
// the process's threads.
#include <cstdint>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t N) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

#define TESSERA_INSTANTIATE(T) \
  template void residual_forward<T>(T*, const T*, const T*, int64_t);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
