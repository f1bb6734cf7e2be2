// Rotary position embedding (RoPE) in Hugging Face Llama's rotate-half convention.
//
// In each head of HS values, element i < HS/2 pairs with element i + HS/2, and the pair
// (x1, x2) at position t is rotated by the angle t * theta^(-2i/HS):
//   x1' = x1 cos - x2 sin,   x2' = x2 cos + x1 sin.
// The backward pass rotates the gradient by the opposite angle (a rotation's transpose is
// its inverse). The angles come from a table made once per model (rope_table), in double
// precision: at positions in the thousands an fp32 angle is off by ~1e-4 radians.
#include <cmath>

#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void rope_table(T* cos_table, T* sin_table, int Tn, int HS, double theta) {
  const int half = HS / 2;
  for (int t = 0; t < Tn; t++)
    for (int i = 0; i < half; i++) {
      const double angle = (double)t * std::pow(theta, -2.0 * i / HS);
      cos_table[(int64_t)t * half + i] = (T)std::cos(angle);
      sin_table[(int64_t)t * half + i] = (T)std::sin(angle);
    }
}

namespace {
// sign +1: rotate by the angle (forward); -1: by its opposite (backward).
template <typename T>
void rope_rotate(T* x, const T* cos_table, const T* sin_table, int B, int Tn, int heads, int HS,
                 int stride, T sign) {
  const int half = HS / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < Tn; t++) {
      T* row = x + ((int64_t)b * Tn + t) * stride;
      const T* c = cos_table + (int64_t)t * half;
      const T* s = sin_table + (int64_t)t * half;
      for (int h = 0; h < heads; h++) {
        T* x1 = row + (int64_t)h * HS;
        T* x2 = x1 + half;
#pragma omp simd
        for (int i = 0; i < half; i++) {
          const T a = x1[i], bb = x2[i], sn = sign * s[i];
          x1[i] = a * c[i] - bb * sn;
          x2[i] = bb * c[i] + a * sn;
        }
      }
    }
}
}  // namespace

template <typename T>
void rope_forward(T* x, const T* cos_table, const T* sin_table, int B, int Tn, int heads, int HS,
                  int stride) {
  rope_rotate(x, cos_table, sin_table, B, Tn, heads, HS, stride, (T)1);
}

template <typename T>
void rope_backward(T* dx, const T* cos_table, const T* sin_table, int B, int Tn, int heads, int HS,
                   int stride) {
  rope_rotate(dx, cos_table, sin_table, B, Tn, heads, HS, stride, (T)-1);
}

#define TESSERA_INSTANTIATE(T)                                                               \
  template void rope_table<T>(T*, T*, int, int, double);                                     \
  template void rope_forward<T>(T*, const T*, const T*, int, int, int, int, int);            \
  template void rope_backward<T>(T*, const T*, const T*, int, int, int, int, int);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
