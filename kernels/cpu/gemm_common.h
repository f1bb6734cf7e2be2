// Pieces shared by the fp32 GEMM (gemm.cpp) and the bf16 GEMM (gemm_bf16.cpp): per-thread
// packing buffers, block and chunk arithmetic, and the threaded driver's chunk loop.
// Internal to kernels/cpu.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace tessera::kernels::gemm_detail {

// The mask of lanes [0, n) of a 16-lane (zmm) vector, as an AVX-512 __mmask16; n may be
// <= 0 or exceed 16.
inline uint16_t lanes16(int n) {
  return n >= 16 ? (uint16_t)0xFFFF : (uint16_t)((1u << std::max(n, 0)) - 1);
}

// A 64-byte aligned buffer of T owned by one thread, grown on demand and then reused.
template <typename T>
class ScratchBuffer {
 public:
  ~ScratchBuffer() { std::free(data_); }
  T* get(size_t n) {
    if (n > size_) {
      std::free(data_);
      size_ = (n + 15) / 16 * 16;
      data_ = static_cast<T*>(std::aligned_alloc(64, size_ * sizeof(T)));
      if (!data_) throw std::bad_alloc();
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Cut [0, n) into `parts` pieces on multiples of `grain`; returns the start of piece p.
inline int split_point(int n, int grain, int parts, int p) {
  const int64_t units = (n + grain - 1) / grain;
  return (int)std::min<int64_t>(n, units * p / parts * grain);
}

// Block size for n cut into ceil(n / max_block) equal blocks (rounded up to `grain`):
// no thin leftover block.
inline int even_block(int n, int max_block, int grain) {
  const int blocks = (n + max_block - 1) / max_block;
  const int b = (n + blocks - 1) / blocks;
  return (b + grain - 1) / grain * grain;
}

// C[M,N] = alpha * op(A) @ op(B) + beta * C cut into `chunks` pieces of N (split_n) or of
// M, on multiples of `grain`, which `threads` OpenMP threads take dynamically; each piece
// runs serial(trans_a, trans_b, M', N', K, alpha, A', lda, B', ldb, beta, C', ldc) on its
// sub-matrices (so each element's sum keeps the serial order).
template <typename E, typename Serial>
void run_chunks(bool split_n, int grain, int chunks, int threads, bool trans_a, bool trans_b,
                int M, int N, int K, float alpha, const E* A, int lda, const E* B, int ldb,
                float beta, float* C, int ldc, Serial serial) {
  const int dim = split_n ? N : M;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int c = 0; c < chunks; c++) {
    const int lo = split_point(dim, grain, chunks, c), hi = split_point(dim, grain, chunks, c + 1);
    if (hi <= lo) continue;
    if (split_n)
      serial(trans_a, trans_b, M, hi - lo, K, alpha, A, lda,
             trans_b ? B + (int64_t)lo * ldb : B + lo, ldb, beta, C + lo, ldc);
    else
      serial(trans_a, trans_b, hi - lo, N, K, alpha, trans_a ? A + lo : A + (int64_t)lo * lda,
             lda, B, ldb, beta, C + (int64_t)lo * ldc, ldc);
  }
}

}  // namespace tessera::kernels::gemm_detail
