// RMSNorm forward and backward over the last dimension (Llama's normalisation: no mean
// subtracted, no bias).
#include <cmath>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* x = inp + (int64_t)n * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    const T s = (T)1 / std::sqrt(ss / (T)C + (T)eps);
    T* o = out + (int64_t)n * C;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
    rstd[n] = s;
  }
}

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int N, int C) {
#pragma omp parallel
  {
    // dinp: rows are independent. With xhat = x * s and dnorm = dout * weight:
    // dx = s * (dnorm - xhat * mean(dnorm * xhat)).
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const T* x = inp + (int64_t)n * C;
      const T* d = dout + (int64_t)n * C;
      T* dx = dinp + (int64_t)n * C;
      const T s = rstd[n];
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; c++) dot += d[c] * weight[c] * x[c] * s;
      const T mean_dot = dot / (T)C;
#pragma omp simd
      for (int c = 0; c < C; c++) dx[c] += s * (d[c] * weight[c] - x[c] * s * mean_dot);
    }
    // dweight: a sum over rows. Threads split the columns (no reduction between threads:
    // the result does not depend on the thread count). Null: frozen (LoRA).
    if (dweight != nullptr) {
#pragma omp for schedule(static)
      for (int c0 = 0; c0 < C; c0 += 16) {
        const int c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int n = 0; n < N; n++) {
          const T* x = inp + (int64_t)n * C;
          const T* d = dout + (int64_t)n * C;
          for (int c = c0; c < c1; c++) dweight[c] += d[c] * x[c] * rstd[n];
        }
      }
    }
  }
}

#define TESSERA_INSTANTIATE(T)                                                               \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int, int, float);             \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
