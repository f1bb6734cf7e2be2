// The bf16 GEMM (see gemm_bf16.h for the contract).
//
// The AVX-512 BF16 engine reuses the BLIS recipe of the fp32 GEMM (gemm.cpp: packing,
// cache blocks, an 8 x 48 register tile) with one change for VDPBF16PS
// (`_mm512_dpbf16_ps(acc, a, b)`: acc[i] += a[2i] * b[2i] + a[2i+1] * b[2i+1] for the 16
// fp32 lanes i): K is consumed in PAIRS. Packed operands hold, for each pair p of K and
// each line (a row of op(A) or a column of op(B)), one 32-bit word with X(line, 2p) in the
// low half and X(line, 2p+1) in the high half (zero past an odd K). The micro-kernel
// broadcasts A's word of row i to all 16 lanes and multiplies it against 16 columns' words
// of B: one instruction does 32 multiply-adds, twice the fp32 FMA's 16, on half the bytes.
// It is compiled for AVX-512 BF16 whatever the build flags (#pragma GCC target below) and
// runs only when cpuid reports the instructions.
//
// Packing K-contiguous operands (op(A) of NN and NT, op(B) of NT) by transposes: a pair
// is one 32-bit word of a line, and the packed layout wants each pair's words of 16 lines
// side by side. Gathers would fetch one word at a time, so 16 lines x 16 pairs are loaded
// as 16 rows and transposed in registers (transpose16x16: 64 shuffles). The micro-kernel
// prefetches its C tile before the K loop, as sgemm's does. The block sizes and the
// thread split are sgemm's; the alternatives tried, and the measurements behind these
// choices, are in docs/performance.md ("Measurements behind the kernels").
#include "kernels/cpu/gemm_bf16.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_common.h"

namespace tessera::kernels {

namespace {

// Portable engine: op(A) and op(B) converted to fp32 (as stored, compact), then sgemm.
void bf16gemm_portable(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                       const bf16* A, int lda, const bf16* B, int ldb, float beta, float* C,
                       int ldc) {
  const int a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  std::vector<float> a((size_t)a_rows * a_cols), b((size_t)b_rows * b_cols);
  for (int r = 0; r < a_rows; r++)
    bf16_to_fp32_array(a.data() + (size_t)r * a_cols, A + (int64_t)r * lda, a_cols);
  for (int r = 0; r < b_rows; r++)
    bf16_to_fp32_array(b.data() + (size_t)r * b_cols, B + (int64_t)r * ldb, b_cols);
  sgemm(trans_a, trans_b, M, N, K, alpha, a.data(), a_cols, b.data(), b_cols, beta, C, ldc);
}

using gemm_detail::even_block;
using gemm_detail::lanes16;

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

constexpr int MR = 8;   // rows of the register tile
constexpr int NR = 48;  // columns of the register tile (3 zmm of fp32 accumulators)
// Cache blocks (same bytes as the fp32 GEMM's: a bf16 is half a float). KC counts K
// elements (KC / 2 pairs): an A sliver is 8 x 768 bf16 = 12 KB (L1), a packed B block
// 768 x 384 bf16 = 576 KB (L2).
constexpr int KC = 768, MC = 1024, NC = 384;

// In-register transpose of a 16 x 16 matrix of 32-bit words (r[i] is row i): 32-bit,
// then 64-bit interleaves within 128-bit lanes, then two rounds of 128-bit lane shuffles;
// 64 shuffles instead of 16 gathers (VPGATHERDD loads one word at a time).
inline void transpose16x16(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; i++) {
    a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {  // b[4i + j], 128-bit lane L: column 4L + j of rows 4i .. 4i + 3
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i + 0], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i + 0], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int j = 0; j < 4; j++) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x88);  // lanes 0, 2
    const __m512i c1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xDD);  // lanes 1, 3
    const __m512i d0 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x88);
    const __m512i d1 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xDD);
    r[j] = _mm512_shuffle_i32x4(c0, d0, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(c1, d1, 0x88);
    r[8 + j] = _mm512_shuffle_i32x4(c0, d0, 0xDD);
    r[12 + j] = _mm512_shuffle_i32x4(c1, d1, 0xDD);
  }
}

// Pack a block of `lines` lines x kc of K into slivers of `sw` lines (sw: a multiple of 16,
// or 8) in pair words. Sliver s starts at dst + s * sw * kp (kp = ceil(kc / 2)) and holds
// word (X(l, 2p), X(l, 2p + 1)) of its line l at p * w + (l - s * sw), where its width w
// is sw, or for a ragged last sliver its line count rounded up to `round` (8 or 16); lines
// past `lines` and the k = kc of an odd kc are zero. X(l, k) = src[l * ld + k] (k_contig:
// a line is contiguous in K) or src[k * ld + l].
//
// The whole block in one call, so that each source row is read once, from start to end: sliver
// by sliver, the strided layout (k_contig false) read 16 or 96 bytes of each of kc rows per
// sliver, a cache and TLB miss per row on the wide operands of dW and dInput, and the
// K-contiguous one transposed 16 lines to keep 8 for A's slivers of 8.
void pack_pairs(const uint16_t* src, int64_t ld, bool k_contig, int lines, int kc, int sw,
                int round, uint32_t* dst) {
  const int kfull = kc / 2, kp = (kc + 1) / 2;  // full pairs, all pairs
  const int slivers = (lines + sw - 1) / sw;
  auto width = [&](int s) {  // stored width of sliver s
    const int n = std::min(sw, lines - s * sw);
    return n == sw ? sw : (n + round - 1) / round * round;
  };
  auto sliver = [&](int s) { return dst + (int64_t)s * sw * kp; };
  const int stored = (slivers - 1) * sw + width(slivers - 1);  // lines with padding
  if (k_contig) {  // a pair is one 32-bit word of a line: transpose 16 x 16 words at a time
    for (int l0 = 0; l0 < stored; l0 += 16) {
      // Lines l0 .. l0 + 15 lie in one sliver (sw a multiple of 16) or two (sw == 8).
      const int s = l0 / sw, w = width(s), w2 = sw == 8 && l0 + 8 < stored ? width(s + 1) : 0;
      for (int p0 = 0; p0 < kfull; p0 += 16) {
        const int np = std::min(16, kfull - p0);
        const __mmask32 load = np == 16 ? ~(__mmask32)0 : (__mmask32)((1u << (2 * np)) - 1);
        __m512i r[16];
        for (int i = 0; i < 16; i++)  // r[i]: words p0 .. p0 + 15 of line l0 + i
          r[i] = l0 + i < lines ? _mm512_maskz_loadu_epi16(load, src + (l0 + i) * ld + 2 * p0)
                                : _mm512_setzero_si512();
        transpose16x16(r);  // r[c]: word p0 + c of lines l0 .. l0 + 15
        for (int c = 0; c < np; c++) {
          const int64_t p = p0 + c;
          if (sw != 8) {
            _mm512_mask_storeu_epi32(sliver(s) + p * w + (l0 - s * sw), lanes16(s * sw + w - l0), r[c]);
            continue;
          }
          _mm256_storeu_si256((__m256i*)(sliver(s) + p * w), _mm512_castsi512_si256(r[c]));
          if (w2) _mm256_storeu_si256((__m256i*)(sliver(s + 1) + p * w2), _mm512_extracti64x4_epi64(r[c], 1));
        }
      }
    }
  } else {  // rows 2p and 2p+1 are contiguous in lines: interleave, each row read once
    for (int p = 0; p < kfull; p++) {
      const uint16_t* r0 = src + 2 * p * ld;
      for (int s = 0; s < slivers; s++) {
        const int w = width(s);
        uint32_t* d = sliver(s) + (int64_t)p * w;
        for (int l0 = 0; l0 < w; l0 += 16) {  // lines s * sw + l0 ...
          const int l = s * sw + l0;
          const __mmask16 m = lanes16(lines - l);
          const __m256i a = _mm256_maskz_loadu_epi16(m, r0 + l);
          const __m256i b = _mm256_maskz_loadu_epi16(m, r0 + ld + l);
          const __m256i lo = _mm256_unpacklo_epi16(a, b);  // lines 0-3 | 8-11
          const __m256i hi = _mm256_unpackhi_epi16(a, b);  // lines 4-7 | 12-15
          _mm256_storeu_si256((__m256i*)(d + l0), _mm256_permute2x128_si256(lo, hi, 0x20));
          if (w - l0 > 8)
            _mm256_storeu_si256((__m256i*)(d + l0 + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
      }
    }
  }
  if (kc % 2) {  // the last, half pair: X(l, kc - 1) and zero
    const int k = kc - 1;
    for (int s = 0; s < slivers; s++)
      for (int i = 0, w = width(s); i < w; i++) {
        const int l = s * sw + i;
        sliver(s)[(int64_t)kfull * w + i] = l < lines ? (k_contig ? src[l * ld + k] : src[k * ld + l]) : 0;
      }
  }
}

// C[0:mr, 0:nr] = alpha * (A sliver @ B sliver) + beta * C over kp pairs of K, with NV
// vectors of 16 columns (NV = 3: the 8 x 48 tile). Ap: kp x 8 words, Bp: kp x 16*NV words.
template <int NV>
void micro_kernel(int kp, const uint32_t* __restrict Ap, const uint32_t* __restrict Bp, float* C,
                  int ldc, float alpha, float beta, int mr, int nr) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  // Start fetching the C tile now (as sgemm does); it is needed only after the K loop.
  for (int i = 0; i < mr; i++)
    for (int v = 0; v < NV; v++)
      _mm_prefetch((const char*)(C + (int64_t)i * ldc + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 2
  for (int p = 0; p < kp; p++) {
    __m512bh b[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) b[v] = (__m512bh)_mm512_load_si512(Bp + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)Ap[i]);  // row i's pair, 16 times
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
    Ap += MR;
    Bp += 16 * NV;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < mr; i++) {
    float* c = C + (int64_t)i * ldc;
    for (int v = 0; v < NV; v++) {
      const __mmask16 m = lanes16(nr - 16 * v);
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c + 16 * v), r);
      _mm512_mask_storeu_ps(c + 16 * v, m, r);
    }
  }
}

// The micro-kernel for a sliver of 1-16, 17-32 or 33-48 columns.
using MicroKernel = void (*)(int, const uint32_t*, const uint32_t*, float*, int, float, float, int,
                             int);
constexpr MicroKernel kMicroKernels[3] = {micro_kernel<1>, micro_kernel<2>, micro_kernel<3>};

struct PackBuffers {
  gemm_detail::ScratchBuffer<uint32_t> a, b;
};

// The whole GEMM on the calling thread (K > 0): M blocks, K blocks (pack A), N blocks
// (pack B), then every A sliver sweeps every B sliver.
void bf16gemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                     const uint16_t* A, int lda, const uint16_t* B, int ldb, float beta, float* C,
                     int ldc) {
  static thread_local PackBuffers buf;
  const int kc_max = even_block(K, KC, 2), mc_max = even_block(M, MC, MR);
  const int nc_max = even_block(N, NC, NR);
  uint32_t* Ap = buf.a.get((size_t)mc_max * kc_max / 2);
  uint32_t* Bp = buf.b.get((size_t)nc_max * kc_max / 2);
  for (int ic = 0; ic < M; ic += mc_max) {
    const int mc = std::min(mc_max, M - ic);
    for (int pc = 0; pc < K; pc += kc_max) {
      const int kc = std::min(kc_max, K - pc), kp = (kc + 1) / 2;
      // op(A)(i, k): A[i, k] or A[k, i]
      pack_pairs(trans_a ? A + (int64_t)pc * lda + ic : A + (int64_t)ic * lda + pc, lda, !trans_a,
                 mc, kc, MR, MR, Ap);
      const float beta_k = pc == 0 ? beta : 1.0f;  // later K blocks accumulate
      for (int jc = 0; jc < N; jc += nc_max) {
        const int nc = std::min(nc_max, N - jc);
        // op(B)(k, j): B[k, j] or B[j, k]
        pack_pairs(trans_b ? B + (int64_t)jc * ldb + pc : B + (int64_t)pc * ldb + jc, ldb, trans_b,
                   nc, kc, NR, 16, Bp);
        for (int i0 = 0; i0 < mc; i0 += MR) {
          const int mr = std::min(MR, mc - i0);
          float* c = C + (int64_t)(ic + i0) * ldc + jc;
          for (int j0 = 0; j0 < nc; j0 += NR) {
            const int nr = std::min(NR, nc - j0);
            kMicroKernels[(nr - 1) / 16](kp, Ap + (int64_t)i0 * kp, Bp + (int64_t)j0 * kp, c + j0,
                                         ldc, alpha, beta_k, mr, nr);
          }
        }
      }
    }
  }
}

#pragma GCC pop_options

bool cpu_has_avx512bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  return has;
}

bool use_avx512bf16() {
  const char* force = std::getenv("TESSERA_BF16_ENGINE");
  return cpu_has_avx512bf16() && !(force && std::strcmp(force, "portable") == 0);
}

}  // namespace

const char* bf16gemm_engine() { return use_avx512bf16() ? "avx512bf16-8x48" : "portable"; }

void bf16gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const bf16* A, int lda,
              const bf16* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // C = beta * C: sgemm's empty product
    sgemm(false, false, M, N, 0, 0.0f, nullptr, 1, nullptr, 1, beta, C, ldc);
    return;
  }
  if (!use_avx512bf16()) {
    bf16gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const uint16_t* a = &A->bits;
  const uint16_t* b = &B->bits;
  // Threads as in sgemm: none inside a parallel region, at least ~4 MFLOP each. Chunks of
  // N (each repacks A) or of M (each repacks B), whichever repacks less, taken
  // dynamically; every element's sum keeps the serial order (bit-identical results).
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  threads = (int)std::min<double>(threads, std::max(1.0, 2.0 * M * N * (double)K / 4e6));
  const bool split_n = (int64_t)M * K <= (int64_t)K * N ? N >= NR * threads : M < MR * threads;
  const int dim = split_n ? N : M, grain = split_n ? NR : MR;
  const int chunks = std::max(
      1, std::min(std::max(threads, std::min(4 * threads, dim / 384)), (dim + grain - 1) / grain));
  threads = std::min(threads, chunks);
  if (threads <= 1) {
    bf16gemm_serial(trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
    return;
  }
  gemm_detail::run_chunks(split_n, grain, chunks, threads, trans_a, trans_b, M, N, K, alpha, a, lda,
                          b, ldb, beta, C, ldc, bf16gemm_serial);
}

}  // namespace tessera::kernels
