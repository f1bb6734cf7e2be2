// SwiGLU, the gated MLP activation of Llama: out = silu(gate) * up, silu(g) = g sigmoid(g).
// Written so that GCC vectorises the loops under -march=native; OpenMP splits the rows
// across the process's threads.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void swiglu_forward(T* out, const T* gate_up, int64_t N, int F) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const T* g = gate_up + n * 2 * F;
    const T* u = g + F;
    T* o = out + n * F;
#pragma omp simd
    for (int j = 0; j < F; j++) o[j] = g[j] / ((T)1 + vexp(-g[j])) * u[j];
  }
}

template <typename T>
void swiglu_backward(T* dgate_up, const T* gate_up, const T* dout, int64_t N, int F) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const T* g = gate_up + n * 2 * F;
    const T* u = g + F;
    const T* d = dout + n * F;
    T* dg = dgate_up + n * 2 * F;
    T* du = dg + F;
#pragma omp simd
    for (int j = 0; j < F; j++) {
      const T sig = (T)1 / ((T)1 + vexp(-g[j]));
      // d silu(g) / dg = sig (1 + g (1 - sig))
      dg[j] += d[j] * u[j] * sig * ((T)1 + g[j] * ((T)1 - sig));
      du[j] += d[j] * g[j] * sig;
    }
  }
}

#define TESSERA_INSTANTIATE(T)                                         \
  template void swiglu_forward<T>(T*, const T*, int64_t, int);         \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
