// Mixed precision on the CPU: the 16-bit compute types and the GEMMs in them.
//
// A mixed-precision run keeps fp32 master weights, gradients and optimizer state, and
// rounds the two operands of every linear layer's GEMM to a 16-bit type; the products
// are summed in fp32 and the result is fp32 (as torch.autocast does for matmuls). The
// types are bf16 (kernels/cpu/cast_bf16.h: fp32's range, 8 significant bits; AVX-512 BF16
// where the CPU has it) and fp16 (kernels/cpu/cast_fp16.h: 11 significant bits, largest
// finite value 65504, so gradients need loss scaling; no fp16 arithmetic on this CPU).
// 16-bit values travel as uint16_t: the type says how to read them.
#pragma once
#include <cstdint>
#include <string>

namespace tessera::kernels {

enum class Dtype { fp32, bf16, fp16 };

// "fp32", "bf16", "fp16"; and back (throws std::invalid_argument for anything else).
const char* dtype_name(Dtype dt);
Dtype dtype_from_name(const std::string& name);

// dst[i] = src[i] rounded to the 16-bit type dt (nearest, ties to even), i < n.
// OpenMP threads split long arrays. dt must be bf16 or fp16.
void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n);

// The same on a [rows, cols] block of a wider matrix (row stride src_stride) into a
// contiguous dst [rows, cols]; the rows are split over the OpenMP threads.
void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                         int64_t src_stride);

// dst[i] = src[i] widened from the 16-bit type dt to fp32 (exact), i < n.
void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n);

// dst[i] = src[i] rounded to bf16 stochastically (kernels/cpu/cast_bf16.h), with the random
// bits of element offset + i of the stream `seed`: shards round as the whole would.
void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                              uint64_t offset);

// C[M,N] = alpha * op(A) @ op(B) + beta * C with A and B of the 16-bit type dt, C fp32:
// the contract of sgemm (kernels/cpu/gemm.h) on bf16gemm or fp16gemm.
void gemm_16bit(Dtype dt, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                const uint16_t* A, int lda, const uint16_t* B, int ldb, float beta, float* C,
                int ldc);

}  // namespace tessera::kernels
