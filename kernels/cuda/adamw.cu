// AdamW on the GPU (kernels/cuda/ops.h: adamw_update), the CPU twin's arithmetic
// (kernels/cpu/adamw.cpp): g = grad_scale * grad; bias corrections folded into two
// scalars computed on the host in double, as the CPU does; decoupled weight decay.
// In the same pass it may write the new parameters' 16-bit compute copy: bf16 or fp16
// rounded to nearest even, or bf16 rounded stochastically with the counter-based bits of
// element copy_offset + i (kernels/cpu/cast_bf16.h), so a shard rounds as the whole would.
//
// Elementwise and memory-bound, one thread per parameter (coalesced fp32 streams).
//   adamw_kernel<Copy>: grid ceil(n / 256), block 256, no smem.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
// What the kernel writes into copy16.
enum class Copy16 { none, bf16, fp16, bf16_stochastic };
}  // namespace

// One AdamW step on parameter i; step_size = lr / (1 - beta1^t), inv_sqrt_bc2 =
// 1 / sqrt(1 - beta2^t), decay = lr * weight_decay.
template <Copy16 Copy>
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, int64_t n,
                             float beta1, float beta2, float eps, float step_size,
                             float inv_sqrt_bc2, float decay, float grad_scale, uint16_t* copy16,
                             uint64_t seed, uint64_t copy_offset) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = grads[i] * grad_scale;
  const float mi = beta1 * m[i] + (1.0f - beta1) * g;
  const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  const float p = params[i] - decay * params[i];
  const float updated = p - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
  params[i] = updated;
  if constexpr (Copy == Copy16::bf16) copy16[i] = float_to_bf16(updated);
  if constexpr (Copy == Copy16::fp16) copy16[i] = float_to_fp16(updated);
  if constexpr (Copy == Copy16::bf16_stochastic)
    copy16[i] = fp32_to_bf16_stochastic(updated, bf16_random_bits(seed, copy_offset + i)).bits;
}

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t,
                  float grad_scale, uint16_t* copy16, Dtype dt, uint64_t stochastic_seed,
                  uint64_t copy_offset, cudaStream_t stream) {
  Copy16 copy = Copy16::none;
  if (copy16 != nullptr) {
    if (dt == Dtype::fp32)
      throw std::invalid_argument("adamw_update: a 16-bit copy cannot be fp32");
    if (dt == Dtype::fp16 && stochastic_seed != 0)
      throw std::invalid_argument("adamw_update: stochastic rounding is for bf16 only");
    copy = dt == Dtype::fp16 ? Copy16::fp16
           : stochastic_seed != 0 ? Copy16::bf16_stochastic
                                  : Copy16::bf16;
  }
  if (n == 0) return;
  // The CPU's scalars (kernels/cpu/adamw.cpp), so both backends step identically.
  const double bc1 = 1.0 - std::pow((double)beta1, (double)t);
  const double bc2 = 1.0 - std::pow((double)beta2, (double)t);
  const float step_size = (float)(lr / bc1);
  const float inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  const float decay = (float)((double)lr * weight_decay);
  auto kernel = adamw_kernel<Copy16::none>;
  if (copy == Copy16::bf16) kernel = adamw_kernel<Copy16::bf16>;
  if (copy == Copy16::fp16) kernel = adamw_kernel<Copy16::fp16>;
  if (copy == Copy16::bf16_stochastic) kernel = adamw_kernel<Copy16::bf16_stochastic>;
  launch("adamw_update", {{"n", n}}, kernel, dim3((unsigned)ceil_div(n, kThreads)),
         dim3(kThreads), 0, stream, params, grads, m, v, n, beta1, beta2, eps, step_size,
         inv_sqrt_bc2, decay, grad_scale, copy16, stochastic_seed, copy_offset);
}

}  // namespace tessera::kernels::cuda
