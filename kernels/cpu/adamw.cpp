// AdamW (ops.h: adamw_update, adamw_update_with_copy).
// Written so that GCC vectorises the loop under -march=native; OpenMP splits it across
// the process's threads.
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cpu/cast_fp16.h"
#include "kernels/ops.h"

namespace tessera::kernels {

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

#define TESSERA_INSTANTIATE(T) \
  template void adamw_update<T>(T*, const T*, T*, T*, int64_t, float, float, float, float, float, \
                                int64_t, float);
TESSERA_INSTANTIATE(float)
TESSERA_INSTANTIATE(double)
#undef TESSERA_INSTANTIATE

}  // namespace tessera::kernels
