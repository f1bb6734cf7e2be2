// Embedding, GELU, residual add, AdamW and reductions: the memory-bound ops.
// Loops are written so that GCC vectorises them under -march=native (AVX-512 where the
// CPU has it); OpenMP splits them across the process's threads.
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"

namespace tessera::kernels {

template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tn, int C) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < Tn; t++) {
      T* o = out + ((int64_t)b * Tn + t) * C;
      const T* tok = wte + (int64_t)inp[b * Tn + t] * C;
      const T* pos = wpe + (int64_t)t * C;
      for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
    }
  }
}

template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tn, int C) {
  // Two positions may hold the same token, so threads split the channels, not the tokens:
  // every thread owns a column range of dwte/dwpe and no two threads write one element.
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16) {
      const int c1 = c0 + 16 < C ? c0 + 16 : C;
      for (int b = 0; b < B; b++) {
        for (int t = 0; t < Tn; t++) {
          const T* d = dout + ((int64_t)b * Tn + t) * C;
          T* tok = dwte + (int64_t)inp[b * Tn + t] * C;
          T* pos = dwpe + (int64_t)t * C;
          for (int c = c0; c < c1; c++) {
            tok[c] += d[c];
            pos[c] += d[c];
          }
        }
      }
    }
  }
}

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t N) {
  const T s = (T)std::sqrt(2.0 / M_PI);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const T x = inp[i];
    out[i] = (T)0.5 * x * ((T)1 + vtanh(s * (x + (T)0.044715 * x * x * x)));
  }
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t N) {
  const T s = (T)std::sqrt(2.0 / M_PI);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const T x = inp[i];
    const T u = s * (x + (T)0.044715 * x * x * x);
    const T th = vtanh(u);
    const T sech2 = (T)1 - th * th;
    const T du = s * ((T)1 + (T)3 * (T)0.044715 * x * x);
    dinp[i] += dout[i] * ((T)0.5 * ((T)1 + th) + (T)0.5 * x * sech2 * du);
  }
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t N) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

namespace {
// The AdamW loop; Copy16: 0 none, 1 bf16, 2 fp16 (written with the new parameter).
template <int Copy16, typename T>
void adamw_loop(T* params, const T* grads, T* m, T* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t t, float grad_scale,
                uint16_t* copy16) {
  // Bias corrections folded into two scalars, as torch.optim.AdamW computes them.
  const double bc1 = 1.0 - std::pow((double)beta1, (double)t);
  const double bc2 = 1.0 - std::pow((double)beta2, (double)t);
  const T step_size = (T)(lr / bc1);
  const T inv_sqrt_bc2 = (T)(1.0 / std::sqrt(bc2));
  const T decay = (T)((double)lr * weight_decay);
  const T b1 = beta1, b2 = beta2, e = eps, gs = grad_scale;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const T g = grads[i] * gs;
    const T mi = b1 * m[i] + ((T)1 - b1) * g;
    const T vi = b2 * v[i] + ((T)1 - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const T p = params[i] - decay * params[i];
    const T updated = p - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + e);
    params[i] = updated;
    if constexpr (Copy16 == 1) copy16[i] = fp32_to_bf16(updated).bits;
    if constexpr (Copy16 == 2) copy16[i] = fp32_to_fp16(updated).bits;
  }
}
}  // namespace

template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t, float grad_scale) {
  adamw_loop<0>(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale,
                nullptr);
}

void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t, float grad_scale, uint16_t* copy16, Dtype dt) {
  if (dt == Dtype::bf16)
    adamw_loop<1>(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale,
                  copy16);
  else if (dt == Dtype::fp16)
    adamw_loop<2>(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale,
                  copy16);
  else
    throw std::invalid_argument("adamw_update_with_copy: fp32 is not a 16-bit type");
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  double total = 0.0;
#pragma omp parallel for simd reduction(+ : total) schedule(static)
  for (int64_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
  return total;
}

#define TESSERA_INSTANTIATE(T)                                                                  \
  template void encoder_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int);       \
  template void encoder_backward<T>(T*, T*, const T*, const int32_t*, int, int, int);           \
  template void gelu_forward<T>(T*, const T*, int64_t);                                         \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);                              \
  template void residual_forward<T>(T*, const T*, const T*, int64_t);                           \
  template void adamw_update<T>(T*, const T*, T*, T*, int64_t, float, float, float, float, float, \
                                int64_t, float);                                                \
  template double sum_squares<T>(const T*, int64_t);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
