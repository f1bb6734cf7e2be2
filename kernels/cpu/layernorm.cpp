// LayerNorm forward and backward over the last dimension.
#include <cmath>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int N, int C) {
  const T eps = (T)1e-5;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* x = inp + (int64_t)n * C;
    T m = 0;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    T var = 0;  // two passes: the one-pass E[x^2] - E[x]^2 loses digits in fp32
    for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const T s = (T)1 / std::sqrt(var + eps);
    T* o = out + (int64_t)n * C;
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const T* mean, const T* rstd, int N, int C) {
#pragma omp parallel
  {
    // dinp: rows are independent.
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const T* x = inp + (int64_t)n * C;
      const T* d = dout + (int64_t)n * C;
      T* dx = dinp + (int64_t)n * C;
      const T m = mean[n], s = rstd[n];
      // dnorm = dout * weight; dx = s * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
      T dnorm_mean = 0, dnorm_xhat_mean = 0;
      for (int c = 0; c < C; c++) {
        const T xhat = (x[c] - m) * s;
        const T dnorm = d[c] * weight[c];
        dnorm_mean += dnorm;
        dnorm_xhat_mean += dnorm * xhat;
      }
      dnorm_mean /= C;
      dnorm_xhat_mean /= C;
      for (int c = 0; c < C; c++) {
        const T xhat = (x[c] - m) * s;
        const T dnorm = d[c] * weight[c];
        dx[c] += s * (dnorm - dnorm_mean - xhat * dnorm_xhat_mean);
      }
    }
    // dweight, dbias: sums over rows. Threads split the columns, so there is no reduction
    // between threads and the result does not depend on the thread count. dweight and
    // dbias both null: a frozen LayerNorm (LoRA), whose gradient nobody wants.
    if (dweight != nullptr) {
#pragma omp for schedule(static)
      for (int c0 = 0; c0 < C; c0 += 16) {
        const int c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int n = 0; n < N; n++) {
          const T* x = inp + (int64_t)n * C;
          const T* d = dout + (int64_t)n * C;
          for (int c = c0; c < c1; c++) {
            dweight[c] += d[c] * (x[c] - mean[n]) * rstd[n];
            dbias[c] += d[c];
          }
        }
      }
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int, int);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int, int);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int, int);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int, int);

}  // namespace tessera::kernels
