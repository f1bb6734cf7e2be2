// The bf16 GEMM of the CPU backend (the bf16 type and its casts: cast_bf16.h).
//
// bf16gemm: the contract of sgemm (kernels/cpu/gemm.h: row-major, trans flags, alpha,
// beta, beta == 0 never reads C, threads) with A and B in bf16, products summed in fp32,
// C in fp32. Engines, chosen at run time (the build flags do not matter):
//  - "avx512bf16-8x48": packing into pairs of K (the layout VDPBF16PS reads) and an 8 x 48
//    register tile of _mm512_dpbf16_ps, where the CPU has AVX-512 BF16 (cpuid);
//  - "portable": converts op(A) and op(B) to fp32 and calls sgemm (same results up to the
//    order of the fp32 sums), everywhere else, or when the environment variable
//    TESSERA_BF16_ENGINE=portable is set (read at every call, for tests).
// Both compute every product exactly (8 x 8 significant bits fit in fp32); they differ only
// in how the fp32 sums round. VDPBF16PS also treats denormal inputs and results as zero.
#pragma once
#include <cstdint>

#include "kernels/cpu/cast_bf16.h"

namespace tessera::kernels {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, A and B bf16, C fp32 (see above).
void bf16gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const bf16* A, int lda,
              const bf16* B, int ldb, float beta, float* C, int ldc);

// "avx512bf16-8x48" or "portable": the engine the next bf16gemm call uses.
const char* bf16gemm_engine();

}  // namespace tessera::kernels
