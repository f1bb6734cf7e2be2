// GELU, GPT-2's tanh approximation (ops.h: gelu_forward, gelu_backward).
// Written so that GCC vectorises the loop under -march=native; OpenMP splits it across
// the process's threads.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t N) {
  const T s = (T)std::sqrt(2.0 / M_PI);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const T x = inp[i];
    out[i] = (T)0.5 * x * ((T)1 + vtanh(s * (x + (T)0.044715 * x * x * x)));
  }
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t N) {
  const T s = (T)std::sqrt(2.0 / M_PI);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const T x = inp[i];
    const T u = s * (x + (T)0.044715 * x * x * x);
    const T th = vtanh(u);
    const T sech2 = (T)1 - th * th;
    const T du = s * ((T)1 + (T)3 * (T)0.044715 * x * x);
    dinp[i] += dout[i] * ((T)0.5 * ((T)1 + th) + (T)0.5 * x * sech2 * du);
  }
}

#define TESSERA_INSTANTIATE(T) \
  template void gelu_forward<T>(T*, const T*, int64_t); \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
