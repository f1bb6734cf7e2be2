// SwiGLU, the gated MLP activation of Llama: out = silu(gate) * up, silu(g) = g sigmoid(g).
// Written so that GCC vectorises the loops under -march=native; OpenMP splits them across
// the process's threads.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t N) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) out[i] = gate[i] / ((T)1 + vexp(-gate[i])) * up[i];
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* gate, const T* up, const T* dout, int64_t N) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const T g = gate[i], sig = (T)1 / ((T)1 + vexp(-g));
    dgate[i] += dout[i] * up[i] * sig * ((T)1 + g * ((T)1 - sig));  // silu'(g) = sig (1 + g (1 - sig))
    dup[i] += dout[i] * g * sig;
  }
}

#define TESSERA_INSTANTIATE(T)                                              \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t);         \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
