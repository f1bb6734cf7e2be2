// AdamW (ops.h: adamw_update, adamw_update_with_copy).
// Written so that GCC vectorises the loops under -march=native; OpenMP splits them across
// the process's threads. The phase is memory-bound: per element it reads p, g, m, v and
// writes p, m, v (28 bytes), plus the 16-bit copy in mixed precision.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cpu/cast_fp16.h"
#include "kernels/ops.h"

namespace tessera::kernels {

namespace {

// AdamW's step for one element, with the bias corrections folded into two scalars as
// torch.optim.AdamW computes them.
template <typename T>
struct AdamwStep {
  T b1, b2, eps, grad_scale, step_size, inv_sqrt_bc2, decay;
  AdamwStep(float lr, float beta1, float beta2, float e, float weight_decay, int64_t t, float gs)
      : b1(beta1), b2(beta2), eps(e), grad_scale(gs) {
    const double bc1 = 1.0 - std::pow((double)beta1, (double)t);
    const double bc2 = 1.0 - std::pow((double)beta2, (double)t);
    step_size = (T)(lr / bc1);
    inv_sqrt_bc2 = (T)(1.0 / std::sqrt(bc2));
    decay = (T)((double)lr * weight_decay);
  }
  // Updates m[i], v[i], params[i]; returns the new parameter.
  inline __attribute__((always_inline)) T operator()(T* params, const T* grads, T* m, T* v,
                                                     int64_t i) const {
    const T g = grads[i] * grad_scale;
    const T mi = b1 * m[i] + ((T)1 - b1) * g;
    const T vi = b2 * v[i] + ((T)1 - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const T p = params[i] - decay * params[i];
    const T updated = p - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    params[i] = updated;
    return updated;
  }
};

// Copy16: 1 bf16, 2 fp16.
template <int Copy16>
inline __attribute__((always_inline)) uint16_t to_16bit(float x) {
  if constexpr (Copy16 == 1) return fp32_to_bf16(x).bits;
  return fp32_to_fp16(x).bits;
}

// Elements [begin, end) with ordinary stores of the copy.
template <int Copy16>
void adamw_copy_range(const AdamwStep<float>& step, float* params, const float* grads, float* m,
                      float* v, int64_t begin, int64_t end, uint16_t* copy16) {
#pragma omp simd
  for (int64_t i = begin; i < end; i++) copy16[i] = to_16bit<Copy16>(step(params, grads, m, v, i));
}

// 64 bytes of the copy from an aligned staging buffer to 64-byte aligned dst, past the caches.
inline void stream64(uint16_t* dst, const uint16_t* src) {
#if defined(__AVX512F__)
  _mm512_stream_si512((__m512i*)dst, _mm512_load_si512((const __m512i*)src));
#elif defined(__AVX__)
  _mm256_stream_si256((__m256i*)dst, _mm256_load_si256((const __m256i*)src));
  _mm256_stream_si256((__m256i*)(dst + 16), _mm256_load_si256((const __m256i*)(src + 16)));
#else
  std::memcpy(dst, src, 64);
#endif
}

// AdamW writing the 16-bit copy of each new parameter. The copy is written with
// non-temporal (streaming) stores: nothing reads it before the next forward pass, and an
// ordinary store first reads each line it writes (write-allocate), 2 more bytes per
// element. Blocks of kBlock elements are staged in L1, then streamed out 64 bytes at a
// time; the head up to 64-byte alignment of the copy and the tail use ordinary stores.
template <int Copy16>
void adamw_with_copy(const AdamwStep<float>& step, float* params, const float* grads, float* m,
                     float* v, int64_t n, uint16_t* copy16) {
  constexpr int64_t kBlock = 1024;  // 2 KB of copy
  const int64_t head = std::min<int64_t>(n, (64 - (int64_t)((uintptr_t)copy16 % 64)) % 64 / 2);
  const int64_t blocks = (n - head) / kBlock;
  adamw_copy_range<Copy16>(step, params, grads, m, v, 0, head, copy16);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) {
    alignas(64) uint16_t staged[kBlock];
    const int64_t i0 = head + b * kBlock;
#pragma omp simd
    for (int64_t j = 0; j < kBlock; j++)
      staged[j] = to_16bit<Copy16>(step(params, grads, m, v, i0 + j));
    for (int64_t j = 0; j < kBlock; j += 32) stream64(copy16 + i0 + j, staged + j);
  }
#if defined(__SSE2__)
  _mm_sfence();  // streaming stores are weakly ordered: drain them before the copy is read
#endif
  adamw_copy_range<Copy16>(step, params, grads, m, v, head + blocks * kBlock, n, copy16);
}

}  // namespace

template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t, float grad_scale) {
  const AdamwStep<T> step(lr, beta1, beta2, eps, weight_decay, t, grad_scale);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) step(params, grads, m, v, i);
}

void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t, float grad_scale, uint16_t* copy16, Dtype dt) {
  const AdamwStep<float> step(lr, beta1, beta2, eps, weight_decay, t, grad_scale);
  if (dt == Dtype::bf16)
    adamw_with_copy<1>(step, params, grads, m, v, n, copy16);
  else if (dt == Dtype::fp16)
    adamw_with_copy<2>(step, params, grads, m, v, n, copy16);
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
