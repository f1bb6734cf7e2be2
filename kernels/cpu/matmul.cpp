// Linear layers as GEMMs (kernels/cpu/gemm.h: Tessera's AVX-512 SGEMM for float; the
// 16-bit types of mixed precision through kernels/cpu/mixed_precision.h).
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/mixed_precision.h"
#include "kernels/ops.h"

namespace tessera::kernels {

// out[n, o] += bias[o]: the bias of matmul_forward, and on its own (ops.h) a row-parallel
// layer's bias after the all-reduce.
template <typename T>
void add_bias(T* out, const T* bias, int N, int OC) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    T* row = out + (int64_t)n * OC;
    for (int o = 0; o < OC; o++) row[o] += bias[o];
  }
}

namespace {
// dbias[o] += sum over n of dout[n, o]. Threads split the output columns: no reduction
// between threads.
template <typename T>
void add_column_sums(T* dbias, const T* dout, int N, int OC) {
#pragma omp parallel for schedule(static)
  for (int o0 = 0; o0 < OC; o0 += 16) {
    const int o1 = o0 + 16 < OC ? o0 + 16 : OC;
    for (int n = 0; n < N; n++) {
      const T* row = dout + (int64_t)n * OC;
      for (int o = o0; o < o1; o++) dbias[o] += row[o];
    }
  }
}
}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC) {
  gemm(false, true, N, OC, C, (T)1, inp, C, weight, C, (T)0, out, OC);  // inp @ weight^T
  if (bias) add_bias(out, bias, N, OC);
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int N, int C, int OC) {
  gemm(false, false, N, C, OC, (T)1, dout, OC, weight, C, (T)1, dinp, C);    // += dout @ weight
  if (dweight) gemm(true, false, OC, C, N, (T)1, dout, OC, inp, C, (T)1, dweight, C);  // += dout^T @ inp
  if (dbias) add_column_sums(dbias, dout, N, OC);
}

void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16, const uint16_t* weight16,
                          const float* bias, int N, int C, int OC) {
  gemm_16bit(dt, false, true, N, OC, C, 1.0f, inp16, C, weight16, C, 0.0f, out, OC);
  if (bias) add_bias(out, bias, N, OC);
}

void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias, const float* dout,
                           const uint16_t* dout16, const uint16_t* inp16,
                           const uint16_t* weight16, int N, int C, int OC) {
  if (dinp) gemm_16bit(dt, false, false, N, C, OC, 1.0f, dout16, OC, weight16, C, 1.0f, dinp, C);
  if (dweight)
    gemm_16bit(dt, true, false, OC, C, N, 1.0f, dout16, OC, inp16, C, 1.0f, dweight, C);
  if (dbias) add_column_sums(dbias, dout, N, OC);
}

template void add_bias<float>(float*, const float*, int, int);
template void add_bias<double>(double*, const double*, int, int);
template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int, int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int);

}  // namespace tessera::kernels
