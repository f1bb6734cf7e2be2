// Token + position embedding (ops.h: encoder_forward, encoder_backward and their
// vocabulary-shard forms). The whole-vocabulary ops are the shard ops with one shard that
// holds every token, so both share one loop each.
// Written so that GCC vectorises the loop under -march=native; OpenMP splits it across
// the process's threads.
#include <cstdint>
#include <limits>

#include "kernels/ops.h"

namespace tessera::kernels {

namespace {
// vocab_rows of a shard that starts at token 0 and holds every token id.
constexpr int kWholeVocabulary = std::numeric_limits<int>::max();
}  // namespace

template <typename T>
void encoder_forward_vocab_shard(T* out, const int32_t* inp, const T* wte_shard, const T* wpe,
                                 int B, int Tn, int C, int vocab_start, int vocab_rows) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < Tn; t++) {
      T* o = out + ((int64_t)b * Tn + t) * C;
      // Subtracted in 64 bits: vocab_start 0 with kWholeVocabulary must not overflow.
      const int64_t row = (int64_t)inp[b * Tn + t] - vocab_start;
      if (row < 0 || row >= vocab_rows) {
        // Another shard's token: its rank contributes the row, this one zeros.
        for (int c = 0; c < C; c++) o[c] = T(0);
        continue;
      }
      const T* tok = wte_shard + row * C;
      if (wpe) {
        const T* pos = wpe + (int64_t)t * C;
        for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
      } else {
        for (int c = 0; c < C; c++) o[c] = tok[c];
      }
    }
  }
}

template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tn, int C) {
  encoder_forward_vocab_shard(out, inp, wte, wpe, B, Tn, C, 0, kWholeVocabulary);
}

template <typename T>
void encoder_backward_vocab_shard(T* dwte_shard, T* dwpe, const T* dout, const int32_t* inp, int B,
                                  int Tn, int C, int vocab_start, int vocab_rows) {
  // Two positions may hold the same token, so threads split the channels, not the tokens:
  // every thread owns a column range of dwte/dwpe and no two threads write one element.
  // Each element's sum runs over the positions in ascending order, the order the GPU's
  // bucketed backward reproduces (kernels/cuda/encoder.cu).
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16) {
      const int c1 = c0 + 16 < C ? c0 + 16 : C;
      for (int b = 0; b < B; b++) {
        for (int t = 0; t < Tn; t++) {
          const T* d = dout + ((int64_t)b * Tn + t) * C;
          if (dwpe) {
            T* pos = dwpe + (int64_t)t * C;
            for (int c = c0; c < c1; c++) pos[c] += d[c];
          }
          const int64_t row = (int64_t)inp[b * Tn + t] - vocab_start;
          if (row < 0 || row >= vocab_rows) continue;
          T* tok = dwte_shard + row * C;
          for (int c = c0; c < c1; c++) tok[c] += d[c];
        }
      }
    }
  }
}

template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tn, int C) {
  encoder_backward_vocab_shard(dwte, dwpe, dout, inp, B, Tn, C, 0, kWholeVocabulary);
}

#define TESSERA_INSTANTIATE(T)                                                                  \
  template void encoder_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int);      \
  template void encoder_backward<T>(T*, T*, const T*, const int32_t*, int, int, int);           \
  template void encoder_forward_vocab_shard<T>(T*, const int32_t*, const T*, const T*, int, int, \
                                               int, int, int);                                  \
  template void encoder_backward_vocab_shard<T>(T*, T*, const T*, const int32_t*, int, int, int, \
                                                int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
