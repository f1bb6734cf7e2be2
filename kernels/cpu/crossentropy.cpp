// Fused softmax + cross-entropy over a padded vocabulary.
#include <cmath>
#include <limits>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void crossentropy_forward_backward(T* losses, T* dlogits, const T* logits, const int32_t* targets,
                                   T dloss, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* row = logits + (int64_t)n * Vp;
    T maxv = -std::numeric_limits<T>::infinity();
    for (int i = 0; i < V; i++) maxv = std::max(maxv, row[i]);
    // Sum in double: over 50k terms a float sum loses the last digits of the loss.
    double sum = 0;
    for (int i = 0; i < V; i++) sum += std::exp((double)(row[i] - maxv));
    const double log_sum = std::log(sum);
    const int target = targets[n];
    losses[n] = (T)(log_sum - (double)(row[target] - maxv));
    if (dlogits) {
      T* drow = dlogits + (int64_t)n * Vp;  // may be row itself: read each entry before writing
      const T inv_sum = (T)(1.0 / sum);
      for (int i = 0; i < V; i++) {
        const T prob = std::exp(row[i] - maxv) * inv_sum;
        drow[i] = dloss * (prob - (i == target ? (T)1 : (T)0));
      }
      for (int i = V; i < Vp; i++) drow[i] = 0;
    }
  }
}

template void crossentropy_forward_backward<float>(float*, float*, const float*, const int32_t*,
                                                   float, int, int, int);
template void crossentropy_forward_backward<double>(double*, double*, const double*,
                                                    const int32_t*, double, int, int, int);

}  // namespace tessera::kernels
