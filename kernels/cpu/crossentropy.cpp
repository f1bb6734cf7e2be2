// Fused softmax + cross-entropy over a padded vocabulary (ops.h:
// crossentropy_forward_backward), and the same over a vocabulary split across the ranks of
// a tensor-parallel group (crossentropy_shard_stats, crossentropy_shard_finish). The row
// passes are shared, so a single shard computes the terms of the whole-row op the same way.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

namespace {

// The max of row[0..n) (-inf when n == 0).
template <typename T>
T row_max(const T* row, int n) {
  T maxv = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : maxv)
  for (int i = 0; i < n; i++) maxv = std::max(maxv, row[i]);
  return maxv;
}

// The sum of exp(row[i] - maxv) over i < n (0 when n == 0). With e not null, each
// exponential also goes to e[i] (it may alias row), so that the gradient pass scales it
// instead of computing it again.
template <typename T>
T sum_exp(const T* row, int n, T maxv, T* e) {
  T sum = 0;
  if (e) {
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) {
      const T x = vexp(row[i] - maxv);
      e[i] = x;
      sum += x;
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += vexp(row[i] - maxv);
  }
  return sum;
}

// out[Vp], holding exp(x - max) in its first n columns, becomes the gradient
// dloss * (softmax - onehot(target)): scaled by dloss / sum, the target column (if among
// the n) less dloss, the padding columns n..Vp-1 zero.
template <typename T>
void finish_gradient(T* out, int n, int Vp, T sum, int target, T dloss) {
  const T scale = dloss / sum;
#pragma omp simd
  for (int i = 0; i < n; i++) out[i] *= scale;
  if (target >= 0 && target < n) out[target] -= dloss;
  for (int i = n; i < Vp; i++) out[i] = 0;
}

}  // namespace

template <typename T>
void crossentropy_forward_backward(T* losses, T* dlogits, const T* logits, const int32_t* targets,
                                   T dloss, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* row = logits + (int64_t)n * Vp;
    const T maxv = row_max(row, V);
    const int target = targets[n];
    const T target_logit = row[target];  // read now: with dlogits == logits the row is overwritten
    T* out = dlogits ? dlogits + (int64_t)n * Vp : nullptr;
    const T sum = sum_exp(row, V, maxv, out);
    losses[n] = std::log(sum) - (target_logit - maxv);
    if (out) finish_gradient(out, V, Vp, sum, target, dloss);
  }
}

template <typename T>
void crossentropy_shard_stats(T* stats, const T* logits, const int32_t* targets, int N, int Vl,
                              int n_real, int vocab_start) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const T* row = logits + (int64_t)n * Vl;
    const T maxv = row_max(row, n_real);
    const int64_t target = (int64_t)targets[n] - vocab_start;
    T* st = stats + 3 * (int64_t)n;
    st[0] = maxv;
    st[1] = sum_exp(row, n_real, maxv, (T*)nullptr);
    st[2] = target >= 0 && target < n_real ? row[target] : T(0);
  }
}

template <typename T>
void crossentropy_shard_finish(T* losses, T* dlogits, const T* logits, const T* all_stats,
                               int ranks, const int32_t* targets, T dloss, int N, int Vl,
                               int n_real, int vocab_start) {
  const int64_t rank_stride = 3 * (int64_t)N;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    // Rank order, the same on every rank: the losses agree to the bit across the group.
    const T* st = all_stats + 3 * (int64_t)n;
    T maxv = st[0], sum = st[1], target_logit = st[2];
    for (int r = 1; r < ranks; r++) {
      const T* other = st + r * rank_stride;
      const T m = std::max(maxv, other[0]);
      // A term whose max is the merged one is kept as is: exp(0) is 1, and two empty
      // shards (-inf, 0) would make exp(-inf - -inf) = NaN.
      sum = (maxv == m ? sum : sum * std::exp(maxv - m)) +
            (other[0] == m ? other[1] : other[1] * std::exp(other[0] - m));
      maxv = m;
      target_logit += other[2];
    }
    losses[n] = std::log(sum) - (target_logit - maxv);
    if (!dlogits) continue;
    const T* row = logits + (int64_t)n * Vl;
    T* out = dlogits + (int64_t)n * Vl;
    sum_exp(row, n_real, maxv, out);  // only the exponentials: the sum is the merged one
    const int64_t target = (int64_t)targets[n] - vocab_start;
    finish_gradient(out, n_real, Vl, sum, target >= 0 && target < n_real ? (int)target : -1,
                    dloss);
  }
}

#define TESSERA_INSTANTIATE(T)                                                                    \
  template void crossentropy_forward_backward<T>(T*, T*, const T*, const int32_t*, T, int, int,   \
                                                 int);                                            \
  template void crossentropy_shard_stats<T>(T*, const T*, const int32_t*, int, int, int, int);    \
  template void crossentropy_shard_finish<T>(T*, T*, const T*, const T*, int, const int32_t*, T, \
                                             int, int, int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
