// The fp16 GEMM of the CPU backend (the fp16 type and its casts: cast_fp16.h).
//
// fp16gemm: the contract of sgemm (kernels/cpu/gemm.h: row-major, trans flags, alpha,
// beta, beta == 0 never reads C, threads) with A and B in fp16, products summed in fp32,
// C in fp32. This CPU has no fp16 dot-product instructions, so it converts op(A) and op(B)
// to fp32 and calls sgemm (like bf16gemm's portable engine): NO speed-up over fp32 here
// (a little slower: the conversions, twice the memory of A and B for the call). fp16 exists
// on the CPU for its range behaviour (loss scaling must keep gradients inside 2^-24..65504,
// and the CPU backend must show the same overflows) and as the CUDA backend's type.
// Every product of two fp16 is exact in fp32 (11 x 11 significant bits fit in 24).
#pragma once
#include <cstdint>

#include "kernels/cpu/cast_fp16.h"

namespace tessera::kernels {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, A and B fp16, C fp32 (see above).
void fp16gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const fp16* A, int lda,
              const fp16* B, int ldb, float beta, float* C, int ldc);

}  // namespace tessera::kernels
