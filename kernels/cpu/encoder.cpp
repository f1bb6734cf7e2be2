// Token + position embedding (ops.h: encoder_forward, encoder_backward).
// Written so that GCC vectorises the loop under -march=native; OpenMP splits it across
// the process's threads.
#include <cstdint>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tn, int C) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < Tn; t++) {
      T* o = out + ((int64_t)b * Tn + t) * C;
      const T* tok = wte + (int64_t)inp[b * Tn + t] * C;
      const T* pos = wpe + (int64_t)t * C;
      for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
    }
  }
}

template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tn, int C) {
  // Two positions may hold the same token, so threads split the channels, not the tokens:
  // every thread owns a column range of dwte/dwpe and no two threads write one element.
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16) {
      const int c1 = c0 + 16 < C ? c0 + 16 : C;
      for (int b = 0; b < B; b++) {
        for (int t = 0; t < Tn; t++) {
          const T* d = dout + ((int64_t)b * Tn + t) * C;
          T* tok = dwte + (int64_t)inp[b * Tn + t] * C;
          T* pos = dwpe + (int64_t)t * C;
          for (int c = c0; c < c1; c++) {
            tok[c] += d[c];
            pos[c] += d[c];
          }
        }
      }
    }
  }
}

#define TESSERA_INSTANTIATE(T) \
  template void encoder_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int); \
  template void encoder_backward<T>(T*, T*, const T*, const int32_t*, int, int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
