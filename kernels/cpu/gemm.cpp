// Tessera's fp32 GEMM: C = alpha * op(A) @ op(B) + beta * C, row-major (see gemm.h).
//
// The AVX-512 engine follows the BLIS / GotoBLAS recipe. A newcomer's map of the tricks:
//
//  * Register tile ("micro-kernel"): an 8 x 48 block of C lives in 24 zmm registers
//    (8 rows x 3 vectors of 16 floats) for the whole K loop. Each step k loads one row of
//    B (3 vectors), then for each of the 8 rows broadcasts one A value to all 16 lanes
//    (`_mm512_set1_ps`, "broadcast") and does 3 fused multiply-adds (`_mm512_fmadd_ps`).
//    24 independent FMA chains hide the 4-cycle FMA latency on Zen5's two 512-bit FMA
//    pipes; 11 loads feed 24 FMAs. 48 divides all of GPT-2's widths (768, 2304, 3072,
//    50304) and 8 divides the token counts, so real shapes have no ragged tiles.
//  * Packing: before the micro-kernel runs, a block of op(A) is copied into "slivers" of
//    8 rows stored k-major (8 consecutive floats per k) and a block of op(B) into slivers
//    of 48 columns stored k-major (48 consecutive floats per k). Transposes and leading
//    dimensions are handled here, once (8x8 register transposes for the strided cases),
//    so the micro-kernel only ever reads two contiguous streams. Ragged edges are padded
//    with zeros in the packed copy; the kernel computes a full tile and stores only the
//    valid part with masked stores (`__mmask16`).
//  * Cache blocking: K is cut into blocks of KC, N into blocks of NC, M into blocks of MC.
//    One packed A sliver (8 x KC floats, 12 KB) stays in L1 while the micro-kernel sweeps
//    it across all B slivers of the packed B block (KC x NC floats, ~0.5 MB), which stays
//    in L2 (1 MB per core on Zen5). C tiles get KC-long updates between loads and stores.
//    Loop order: M blocks, K blocks (pack A), N blocks (pack B), so that with M <= MC
//    every element of A and B is packed, and every weight read from memory, once.
//  * Threads: the work is cut into chunks that the OpenMP threads take dynamically
//    (robust when other processes slow one core down): along N or M (each chunk repacks
//    the operand that is not cut), or along K with a private accumulator per thread and
//    a final sum (dInput's deep K), whichever moves the fewest floats. Each thread packs
//    into its own buffers (thread_local, 64-byte aligned, allocated once and reused).
//    Inside a parallel region the GEMM runs on the calling thread: no nesting.
//
// Without AVX-512 (TESSERA_NATIVE=OFF, or -DTESSERA_GEMM_PORTABLE to force it) a portable
// blocked loop runs instead: the same packing idea with a 4 x 32 register tile written
// as plain loops, which the compiler vectorizes for whatever ISA the build targets
// (about half the AVX-512 engine's speed when built with AVX-512).
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "kernels/cpu/gemm_common.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && !defined(TESSERA_GEMM_PORTABLE)
#define TESSERA_GEMM_AVX512 1
#include <immintrin.h>
#endif

namespace tessera::kernels {

namespace {

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

using ScratchBuffer = gemm_detail::ScratchBuffer<float>;
using gemm_detail::even_block;
using gemm_detail::lanes16;
using gemm_detail::split_point;

struct ThreadBuffers {
  ScratchBuffer a, b;  // packed blocks of A and B
  ScratchBuffer partial;  // a private C for the K-split (split_k)
};
ThreadBuffers& thread_buffers() {
  static thread_local ThreadBuffers buffers;
  return buffers;
}

// C = beta * C on an M x N block (beta == 0 writes zeros without reading C).
void scale_c(int M, int N, float beta, float* C, int ldc) {
  if (beta == 1.0f) return;
  for (int i = 0; i < M; i++) {
    float* c = C + (int64_t)i * ldc;
    if (beta == 0.0f)
      std::fill(c, c + N, 0.0f);
    else
      for (int j = 0; j < N; j++) c[j] *= beta;
  }
}

#if TESSERA_GEMM_AVX512
// ---------------------------------------------------------------------------------------
// AVX-512 engine
// ---------------------------------------------------------------------------------------
constexpr int MR = 8;   // rows of the register tile
constexpr int NR = 48;  // columns of the register tile (3 zmm vectors)
// Cache blocking (Zen5: 48 KB L1d, 1 MB L2 per core, 32 MB shared L3): one A sliver
// (8 x KC floats, 12 KB) stays in L1 while it sweeps the packed B block (KC x NC floats,
// 576 KB), which stays in L2. The packed A block (MC x KC, up to 1.5 MB) is only read
// sliver by sliver, so it may sit in L3; MC is large so that A is packed once.
#ifndef TESSERA_GEMM_KC  // (overridable at compile time for tuning experiments)
#define TESSERA_GEMM_KC 384
#define TESSERA_GEMM_MC 1024
#define TESSERA_GEMM_NC 384
#endif
constexpr int KC = TESSERA_GEMM_KC;  // depth of a packed block
constexpr int MC = TESSERA_GEMM_MC;  // rows of a packed A block
constexpr int NC = TESSERA_GEMM_NC;  // columns of a packed B block

// Lanes [0, n) of an 8-lane (ymm) mask (lanes16 in gemm_common.h: zmm); n may be <= 0 or
// exceed the width.
inline __mmask8 lanes8(int n) {
  return n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << std::max(n, 0)) - 1);
}

// In-register transpose of an 8x8 block: r[i] holds row i on entry, column i on return.
inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; h++) {  // h = 0: rows 0-3, h = 1: rows 4-7
    u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
    r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
  }
}

// Transposed copy of a rows x cols block (rows, cols <= 8) of a row-major matrix:
// dst[c * dst_stride + r] = src[r * ld + c] for c < cols, zero for rows r >= rows.
// kFull: rows == cols == 8 (the common case, without masks).
template <bool kFull>
inline void transpose_block8(const float* src, int64_t ld, int rows, int cols, float* dst,
                             int dst_stride) {
  __m256 r[8];
  if (kFull) {
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld);
  } else {
    const __mmask8 m = lanes8(cols);
    for (int i = 0; i < 8; i++)
      r[i] = i < rows ? _mm256_maskz_loadu_ps(m, src + i * ld) : _mm256_setzero_ps();
  }
  transpose8x8(r);
  for (int c = 0; c < (kFull ? 8 : cols); c++) _mm256_storeu_ps(dst + c * dst_stride, r[c]);
}

// Pack an mc x kc block of op(A) (top-left at A) into slivers of MR rows: sliver s holds
// op(A)(8s + r, k) at Ap[s * 8 * kc + k * 8 + r], rows past mc zero.
void pack_a(bool trans_a, const float* A, int lda, int mc, int kc, float* Ap) {
  for (int i0 = 0; i0 < mc; i0 += MR, Ap += MR * kc) {
    const int mr = std::min(MR, mc - i0);
    if (trans_a) {  // A stored K x M: each k gives 8 contiguous values
      const __mmask8 m = lanes8(mr);
      for (int k = 0; k < kc; k++)
        _mm256_store_ps(Ap + k * MR, _mm256_maskz_loadu_ps(m, A + (int64_t)k * lda + i0));
      continue;
    }
    // A stored M x K: 8 rows x 8 k at a time through register transposes.
    const float* a = A + (int64_t)i0 * lda;
    int k = 0;
    if (mr == MR)
      for (; k + 8 <= kc; k += 8) transpose_block8<true>(a + k, lda, 8, 8, Ap + k * MR, MR);
    for (; k < kc; k += 8)
      transpose_block8<false>(a + k, lda, mr, std::min(8, kc - k), Ap + k * MR, MR);
  }
}

// Width of the B sliver that starts `left` columns before the end of the block: 48,
// except that a ragged end of 49..64 columns is cut 32 + 17..32 rather than 48 + 1..16
// (two 16-accumulator tiles instead of a full one and an 8-accumulator one).
inline int sliver_width(int left) { return left > NR && left <= NR + 16 ? 32 : std::min(NR, left); }

// Pack a kc x nc block of op(B) (top-left at B) into slivers of up to NR columns: the
// sliver starting at column j0 lives at Bp + j0 * kc with row stride w = its width
// rounded up to 16, columns past nc zero. (Every sliver but the last is 48 or 32 wide,
// so j0 * kc is also where the previous slivers end.)
void pack_b(bool trans_b, const float* B, int ldb, int kc, int nc, float* Bp) {
  if (!trans_b) {  // B stored K x N: walk each source row once, w floats to each sliver
    for (int k = 0; k < kc; k++) {
      const float* src = B + (int64_t)k * ldb;
      for (int j0 = 0, nr; j0 < nc; j0 += nr) {
        nr = sliver_width(nc - j0);
        if (nr == NR) {
          float* dst = Bp + (int64_t)j0 * kc + k * NR;
          _mm512_store_ps(dst, _mm512_loadu_ps(src + j0));
          _mm512_store_ps(dst + 16, _mm512_loadu_ps(src + j0 + 16));
          _mm512_store_ps(dst + 32, _mm512_loadu_ps(src + j0 + 32));
        } else {
          const int w = (nr + 15) / 16 * 16;
          float* dst = Bp + (int64_t)j0 * kc + k * w;
          for (int v = 0; v < w; v += 16)
            _mm512_store_ps(dst + v, _mm512_maskz_loadu_ps(lanes16(nr - v), src + j0 + v));
        }
      }
    }
    return;
  }
  for (int j0 = 0, nr; j0 < nc; j0 += nr) {
    nr = sliver_width(nc - j0);
    const int w = (nr + 15) / 16 * 16;
    float* dst = Bp + (int64_t)j0 * kc;
    // B stored N x K: 8 columns x 8 k at a time through register transposes.
    for (int c = 0; c < w; c += 8) {
      const float* src = B + (int64_t)(j0 + c) * ldb;
      const int rows = std::max(0, std::min(8, nr - c));
      int k = 0;
      if (rows == 8)
        for (; k + 8 <= kc; k += 8) transpose_block8<true>(src + k, ldb, 8, 8, dst + k * w + c, w);
      for (; k < kc; k += 8)
        transpose_block8<false>(src + k, ldb, rows, std::min(8, kc - k), dst + k * w + c, w);
    }
  }
}

// The micro-kernel: C[0:mr, 0:nr] = alpha * (A sliver @ B sliver) + beta * C, with NV
// vectors of 16 columns (NV = 3 is the 8x48 tile; 2 and 1 serve ragged right edges).
// Ap: kc x 8 and Bp: kc x 16*NV, both packed (64-byte aligned, contiguous).
template <int NV>
void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp, float* C,
                  int ldc, float alpha, float beta, int mr, int nr) {
  __m512 acc[MR][NV];  // the register tile: 8 x NV zmm accumulators
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();

  // Start fetching the C tile now; it is needed only after the K loop.
  for (int i = 0; i < mr; i++)
    for (int v = 0; v < NV; v++)
      _mm_prefetch((const char*)(C + (int64_t)i * ldc + 16 * v), _MM_HINT_T0);

#pragma GCC unroll 4
  for (int k = 0; k < kc; k++) {
    __m512 b[NV];  // one row of the B sliver
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      const __m512 a = _mm512_set1_ps(Ap[i]);  // broadcast A(i, k) to 16 lanes
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    Ap += MR;
    Bp += 16 * NV;
  }

  // Write back: masked on a ragged right edge, only mr rows; beta == 0 never reads C.
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 mask[NV];
  for (int v = 0; v < NV; v++) mask[v] = lanes16(nr - 16 * v);
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    if (i >= mr) break;
    float* c = C + (int64_t)i * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) {
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (beta == 1.0f)
        r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], c + 16 * v));
      else if (beta != 0.0f)
        r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], c + 16 * v), r);
      _mm512_mask_storeu_ps(c + 16 * v, mask[v], r);
    }
  }
}

// A packed A block (mc x kc) times a packed B block (kc x nc) into C (mc x nc). Each A
// sliver stays in L1 while it sweeps all B slivers, which stay in L2.
void macro_kernel(int mc, int nc, int kc, const float* Ap, const float* Bp, float* C, int ldc,
                  float alpha, float beta) {
  for (int i0 = 0; i0 < mc; i0 += MR) {
    const int mr = std::min(MR, mc - i0);
    const float* a = Ap + (int64_t)i0 * kc;
    float* c_rows = C + (int64_t)i0 * ldc;
    for (int j0 = 0, nr; j0 < nc; j0 += nr) {
      nr = sliver_width(nc - j0);
      const float* b = Bp + (int64_t)j0 * kc;
      if (nr > 32)
        micro_kernel<3>(kc, a, b, c_rows + j0, ldc, alpha, beta, mr, nr);
      else if (nr > 16)
        micro_kernel<2>(kc, a, b, c_rows + j0, ldc, alpha, beta, mr, nr);
      else
        micro_kernel<1>(kc, a, b, c_rows + j0, ldc, alpha, beta, mr, nr);
    }
  }
}

// The whole GEMM on the calling thread (K > 0, alpha != 0). Loops, outside in: M blocks,
// K blocks (pack an A block), N blocks (pack a B block), then the macro-kernel. With
// M <= MC (the token dimension of the forward and dInput GEMMs) every element of A and
// B is packed exactly once: the weights are read from memory once.
void gemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  ThreadBuffers& buf = thread_buffers();
  const int kc_max = even_block(K, KC, 8);
  const int mc_max = even_block(M, MC, MR);
  const int nc_max = even_block(N, NC, NR);
  float* Ap = buf.a.get((size_t)mc_max * kc_max);
  float* Bp = buf.b.get((size_t)kc_max * ((nc_max + 15) / 16 * 16));

  for (int ic = 0; ic < M; ic += mc_max) {
    const int mc = std::min(mc_max, M - ic);
    for (int pc = 0; pc < K; pc += kc_max) {
      const int kc = std::min(kc_max, K - pc);
      pack_a(trans_a, trans_a ? A + (int64_t)pc * lda + ic : A + (int64_t)ic * lda + pc, lda,
             mc, kc, Ap);
      const float beta_k = pc == 0 ? beta : 1.0f;  // later K blocks accumulate
      for (int jc = 0; jc < N; jc += nc_max) {
        const int nc = std::min(nc_max, N - jc);
        pack_b(trans_b, trans_b ? B + (int64_t)jc * ldb + pc : B + (int64_t)pc * ldb + jc, ldb,
               kc, nc, Bp);
        macro_kernel(mc, nc, kc, Ap, Bp, C + (int64_t)ic * ldc + jc, ldc, alpha, beta_k);
      }
    }
  }
}

constexpr int kGrainM = MR, kGrainN = NR;

#else  // !TESSERA_GEMM_AVX512
// ---------------------------------------------------------------------------------------
// Portable engine: blocked loops the compiler vectorizes (used without AVX-512).
// ---------------------------------------------------------------------------------------
constexpr int PKB = 256;  // K block
constexpr int PNB = 512;  // N block: a packed op(B) block is PKB x PNB floats (512 KB)
constexpr int PMR = 4, PNR = 32;  // register tile: 4 x 32 accumulators (fits 16 ymm)

void gemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  scale_c(M, N, beta, C, ldc);
  float* Bb = thread_buffers().b.get((size_t)PKB * PNB);
  float* Ab = thread_buffers().a.get((size_t)PKB * PMR);
  for (int j0 = 0; j0 < N; j0 += PNB) {
    const int nb = std::min(PNB, N - j0);
    const int nbp = (nb + PNR - 1) / PNR * PNR;  // padded with zero columns
    for (int p0 = 0; p0 < K; p0 += PKB) {
      const int kb = std::min(PKB, K - p0);
      // Packing: op(B)[p0:p0+kb, j0:j0+nb] as contiguous rows, scaled by alpha.
      for (int k = 0; k < kb; k++)
        for (int j = 0; j < nbp; j++)
          Bb[k * nbp + j] = j >= nb ? 0.0f
                            : alpha * (trans_b ? B[(int64_t)(j0 + j) * ldb + p0 + k]
                                               : B[(int64_t)(p0 + k) * ldb + j0 + j]);
      for (int i0 = 0; i0 < M; i0 += PMR) {
        const int mr = std::min(PMR, M - i0);
        // Packing: op(A)[i0:i0+4, p0:p0+kb], 4 values per k.
        for (int k = 0; k < kb; k++)
          for (int r = 0; r < PMR; r++)
            Ab[k * PMR + r] = r >= mr ? 0.0f
                              : trans_a ? A[(int64_t)(p0 + k) * lda + i0 + r]
                                        : A[(int64_t)(i0 + r) * lda + p0 + k];
        for (int jj = 0; jj < nb; jj += PNR) {
          // Register tile: the compiler keeps acc in vector registers.
          float acc[PMR][PNR] = {};
          for (int k = 0; k < kb; k++) {
            const float* __restrict b = Bb + k * nbp + jj;
            for (int r = 0; r < PMR; r++)
              for (int j = 0; j < PNR; j++) acc[r][j] += Ab[k * PMR + r] * b[j];
          }
          const int w = std::min(PNR, nb - jj);
          for (int r = 0; r < mr; r++) {
            float* c = C + (int64_t)(i0 + r) * ldc + j0 + jj;
            for (int j = 0; j < w; j++) c[j] += acc[r][j];
          }
        }
      }
    }
  }
}

constexpr int kGrainM = 8, kGrainN = 64;
#endif

// Chunks are at least this wide (columns or rows): the packing a chunk repeats then
// stays within a few per cent of its arithmetic.
constexpr int kMinChunk = 384;
constexpr int kGrainK = 384;  // K chunks: whole K blocks

// Threaded GEMM cut along K (for K much larger than M and N, like dInput = dOut @ W with
// W's 50304 rows): thread t takes the t-th slice of K; thread 0 updates C itself (with
// beta), the others fill a private M x N buffer each, which is then added to C, split
// over rows. Slices are fixed, not taken dynamically: the result then depends only on
// the number of threads, never on timing (sums in a fixed order are reproducible).
void split_k(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
             int lda, const float* B, int ldb, float beta, float* C, int ldc, int threads) {
  std::vector<float*> partial(threads, nullptr);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int lo = split_point(K, kGrainK, nt, t), hi = split_point(K, kGrainK, nt, t + 1);
    const float* a = trans_a ? A + (int64_t)lo * lda : A + lo;
    const float* b = trans_b ? B + lo : B + (int64_t)lo * ldb;
    if (t == 0) {
      if (hi > lo)
        gemm_serial(trans_a, trans_b, M, N, hi - lo, alpha, a, lda, b, ldb, beta, C, ldc);
      else
        scale_c(M, N, beta, C, ldc);
    } else if (hi > lo) {
      partial[t] = thread_buffers().partial.get((size_t)M * N);
      gemm_serial(trans_a, trans_b, M, N, hi - lo, alpha, a, lda, b, ldb, 0.0f, partial[t], N);
    }
#pragma omp barrier  // C and every partial buffer are complete before the sum
#pragma omp for schedule(static)
    for (int i = 0; i < M; i++) {
      float* c = C + (int64_t)i * ldc;
      for (int s = 1; s < nt; s++)
        if (const float* p = partial[s])
          for (int j = 0; j < N; j++) c[j] += p[(int64_t)i * N + j];
    }
  }
}

}  // namespace

const char* gemm_engine() {
#if TESSERA_GEMM_AVX512
  return "avx512-8x48";
#else
  return "portable";
#endif
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // nothing to multiply: C = beta * C
    scale_c(M, N, beta, C, ldc);
    return;
  }

  // Threads: one inside a parallel region; otherwise the pool, but no more than the work
  // feeds (about 4 MFLOP per thread, and at least one register tile each).
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double flops = 2.0 * M * N * (double)K;
  threads = (int)std::min<double>(threads, std::max(1.0, flops / 4e6));
  if (threads <= 1) {
    gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }

  // Work split into chunks that the threads take dynamically, so that a core slowed down
  // by other processes does not leave the other waiting for a fixed half. Every chunk
  // packs its own operands, so splitting repeats some packing: cutting N repacks A per
  // chunk, cutting M repacks B; cutting K (one slice per thread) repacks nothing but
  // needs a private M x N buffer per thread and a final sum. Take the cheapest (counted
  // in floats moved). Cutting N or M leaves every element's sum in the serial order.
  const auto chunks_for = [threads](int dim, int grain) {  // >= threads when dim allows
    return std::max(std::min(4 * threads, dim / kMinChunk),
                    std::min(threads, (dim + grain - 1) / grain));
  };
  const int chunks_n = chunks_for(N, kGrainN), chunks_m = chunks_for(M, kGrainM);
  const int chunks_k = (K + kGrainK - 1) / kGrainK;  // K slices possible (one per thread)
  // A transposed A packs through 32-byte pieces of strided rows, which costs about twice
  // the time per float of the other packing paths (docs/performance.md). A split with
  // fewer chunks than threads is only a last resort.
  const double idle = 1e30, a_weight = trans_a ? 2.0 : 1.0;
  const double cost_n =
      a_weight * (chunks_n - 1.0) * M * K + (chunks_n < threads ? idle / chunks_n : 0);
  const double cost_m = (chunks_m - 1.0) * K * N + (chunks_m < threads ? idle / chunks_m : 0);
  const double cost_k = 3.0 * threads * M * N + (chunks_k < threads ? 1e300 : 0);
  if (cost_k < std::min(cost_n, cost_m)) {
    split_k(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
    return;
  }
  const bool split_n = cost_n <= cost_m;
  const int grain = split_n ? kGrainN : kGrainM;
  const int chunks = split_n ? chunks_n : chunks_m;
  threads = std::min(threads, chunks);
  gemm_detail::run_chunks(split_n, grain, chunks, threads, trans_a, trans_b, M, N, K, alpha, A, lda,
                          B, ldb, beta, C, ldc, gemm_serial);
}

}  // namespace tessera::kernels
