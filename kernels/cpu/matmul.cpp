// Linear layers as GEMMs on Eigen maps of our row-major buffers. Eigen's own AVX-512
// kernels run the GEMM on the OpenMP pool (measured faster here than OpenBLAS, which this
// machine holds to AVX2; see docs/performance.md).
#include <Eigen/Core>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMajor<T>>;
template <typename T>
using MutMap = Eigen::Map<RowMajor<T>>;

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC) {
  ConstMap<T> x(inp, N, C), w(weight, OC, C);
  MutMap<T> y(out, N, OC);
  y.noalias() = x * w.transpose();
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
  ConstMap<T> dy(dout, N, OC), x(inp, N, C), w(weight, OC, C);
  MutMap<T> dx(dinp, N, C), dw(dweight, OC, C);
  dx.noalias() += dy * w;
  dw.noalias() += dy.transpose() * x;
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
