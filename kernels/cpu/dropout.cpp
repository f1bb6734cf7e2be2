// Dropout with a counter-based mask (ops.h: dropout_forward, dropout_backward; the mask in
// kernels/dropout.h).
#include "kernels/dropout.h"

#include <cstdint>

#include "kernels/ops.h"

namespace tessera::kernels {

void dropout_forward(float* out, const float* inp, int N, int C, const DropoutMask& mask) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      out[(int64_t)n * C + c] = inp[(int64_t)n * C + c] * dropout_factor(mask, n, c);
}

void dropout_backward(float* dinp, const float* dout, int N, int C, const DropoutMask& mask) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      dinp[(int64_t)n * C + c] += dout[(int64_t)n * C + c] * dropout_factor(mask, n, c);
}

}  // namespace tessera::kernels
