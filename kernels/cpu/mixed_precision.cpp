// The 16-bit types behind one interface (see mixed_precision.h).
#include "kernels/cpu/mixed_precision.h"

#include <stdexcept>

#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/gemm_fp16.h"

namespace tessera::kernels {

static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2, "16-bit types are their bits");

const char* dtype_name(Dtype dt) {
  switch (dt) {
    case Dtype::fp32: return "fp32";
    case Dtype::bf16: return "bf16";
    case Dtype::fp16: return "fp16";
  }
  return "?";
}

Dtype dtype_from_name(const std::string& name) {
  for (Dtype dt : {Dtype::fp32, Dtype::bf16, Dtype::fp16})
    if (name == dtype_name(dt)) return dt;
  throw std::invalid_argument("unknown precision '" + name + "' (expected fp32, bf16 or fp16)");
}

namespace {
// Long arrays (the whole model's weights) are split over the threads in blocks of 64 KiB
// of output; short ones (one layer's activations) stay on the calling thread.
constexpr int64_t kBlock = 32768;

template <typename F>
void blocked(int64_t n, F&& convert) {
  if (n <= 4 * kBlock) return convert(0, n);
#pragma omp parallel for schedule(static)
  for (int64_t lo = 0; lo < n; lo += kBlock) convert(lo, lo + kBlock < n ? lo + kBlock : n);
}
}  // namespace

void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n) {
  if (dt == Dtype::bf16)
    blocked(n, [&](int64_t lo, int64_t hi) {
      fp32_to_bf16_array(reinterpret_cast<bf16*>(dst) + lo, src + lo, hi - lo);
    });
  else if (dt == Dtype::fp16)
    blocked(n, [&](int64_t lo, int64_t hi) {
      fp32_to_fp16_array(reinterpret_cast<fp16*>(dst) + lo, src + lo, hi - lo);
    });
  else
    throw std::invalid_argument("round_to_16bit: fp32 is not a 16-bit type");
}

void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                         int64_t src_stride) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) round_to_16bit(dt, dst + r * cols, src + r * src_stride, cols);
}

void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n) {
  if (dt == Dtype::bf16)
    blocked(n, [&](int64_t lo, int64_t hi) {
      bf16_to_fp32_array(dst + lo, reinterpret_cast<const bf16*>(src) + lo, hi - lo);
    });
  else if (dt == Dtype::fp16)
    blocked(n, [&](int64_t lo, int64_t hi) {
      fp16_to_fp32_array(dst + lo, reinterpret_cast<const fp16*>(src) + lo, hi - lo);
    });
  else
    throw std::invalid_argument("widen_16bit: fp32 is not a 16-bit type");
}

void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                              uint64_t offset) {
  blocked(n, [&](int64_t lo, int64_t hi) {
    fp32_to_bf16_stochastic_array(reinterpret_cast<bf16*>(dst) + lo, src + lo, hi - lo, seed,
                                  offset + (uint64_t)lo);
  });
}

void gemm_16bit(Dtype dt, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                const uint16_t* A, int lda, const uint16_t* B, int ldb, float beta, float* C,
                int ldc) {
  if (dt == Dtype::bf16)
    bf16gemm(trans_a, trans_b, M, N, K, alpha, reinterpret_cast<const bf16*>(A), lda,
             reinterpret_cast<const bf16*>(B), ldb, beta, C, ldc);
  else if (dt == Dtype::fp16)
    fp16gemm(trans_a, trans_b, M, N, K, alpha, reinterpret_cast<const fp16*>(A), lda,
             reinterpret_cast<const fp16*>(B), ldb, beta, C, ldc);
  else
    throw std::invalid_argument("gemm_16bit: fp32 is not a 16-bit type");
}

}  // namespace tessera::kernels
