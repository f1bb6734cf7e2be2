// Fused softmax + cross-entropy over a padded vocabulary.
#include <cmath>
#include <limits>

#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void crossentropy_forward_backward(T* losses, T* dlogits, const T* logits, const int32_t* targets,
                                   T dloss, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* row = logits + (int64_t)n * Vp;
    T maxv = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : maxv)
    for (int i = 0; i < V; i++) maxv = std::max(maxv, row[i]);
    const int target = targets[n];
    const T target_logit = row[target];  // read now: with dlogits == logits the row is overwritten
    // With a gradient to write, exp(x - max) goes straight into it and is scaled in a
    // second pass, so each exponential is computed once.
    T* out = dlogits ? dlogits + (int64_t)n * Vp : nullptr;
    T sum = 0;
    if (out) {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; i++) {
        const T e = vexp(row[i] - maxv);
        out[i] = e;
        sum += e;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; i++) sum += vexp(row[i] - maxv);
    }
    losses[n] = std::log(sum) - (target_logit - maxv);
    if (out) {
      // d(loss)/d(logit_i) = dloss * (softmax_i - [i == target])
      const T scale = dloss / sum;
#pragma omp simd
      for (int i = 0; i < V; i++) out[i] *= scale;
      out[target] -= dloss;
      for (int i = V; i < Vp; i++) out[i] = 0;
    }
  }
}

template void crossentropy_forward_backward<float>(float*, float*, const float*, const int32_t*,
                                                   float, int, int, int);
template void crossentropy_forward_backward<double>(double*, double*, const double*,
                                                    const int32_t*, double, int, int, int);

}  // namespace tessera::kernels
