// Linear layers as GEMMs (kernels/cpu/gemm.h: Tessera's AVX-512 SGEMM for float).
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC) {
  gemm(false, true, N, OC, C, (T)1, inp, C, weight, C, (T)0, out, OC);  // inp @ weight^T
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
      T* row = out + (int64_t)n * OC;
      for (int o = 0; o < OC; o++) row[o] += bias[o];
    }
  }
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int N, int C, int OC) {
  gemm(false, false, N, C, OC, (T)1, dout, OC, weight, C, (T)1, dinp, C);    // += dout @ weight
  gemm(true, false, OC, C, N, (T)1, dout, OC, inp, C, (T)1, dweight, C);     // += dout^T @ inp
  if (dbias) {
    // Threads split the output columns: no reduction between threads.
#pragma omp parallel for schedule(static)
    for (int o0 = 0; o0 < OC; o0 += 16) {
      const int o1 = o0 + 16 < OC ? o0 + 16 : OC;
      for (int n = 0; n < N; n++) {
        const T* row = dout + (int64_t)n * OC;
        for (int o = o0; o < o1; o++) dbias[o] += row[o];
      }
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int, int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int);

}  // namespace tessera::kernels
