// Flash attention (kernels/cuda/ops.h: flash_attention_supported, flash_attention_forward,
// flash_attention_scratch, flash_attention_backward): causal multi-head self-attention as
// in kernels/cpu/attention.cpp, computed FlashAttention-2 style on bf16 tensor cores
// (mma.sync m16n8k16, kernels/cuda/mma.cuh) with fp32 accumulation. No T x T matrix is
// stored: the forward keeps each row's log-sum-exp, and the backward recomputes the
// probabilities tile by tile from it.
//
// q, k, v are read from the fp32 qkv [B,T,3C] and rounded to bf16 (nearest even, the
// CPU's fp32_to_bf16) as their tiles are staged in shared memory; the probabilities P,
// dO and dS are rounded to bf16 as MMA operands. Scores, softmax statistics and every
// accumulator are fp32. HS = C / NH is a template parameter D: 64 or 128.
//
// Tiles: a block is 8 warps (256 threads); each warp owns 16 rows (queries, or keys in
// the dK/dV kernel) of the block's 128, so the softmax row statistics stay in the four
// lanes that hold a row (two __shfl_xor). Shared-memory bf16 rows are D + 8 long, so the
// eight 16-byte rows an ldmatrix reads fall in distinct banks. The tiles a loop walks
// through (K and V, or Q and dO) are double-buffered through an fp32 staging area:
// cp.async copies tile j+1 while the warps compute on tile j, then each thread rounds
// the float4s it copied to bf16 (no registers held across the MMAs, and the load latency
// hidden even at one block per SM). Shared memory per block (D = 64 / 128):
//   flash_forward_kernel<D>: grid (ceil(T/128), B*NH), block 256, smem 68 / 132 KiB:
//     staging for 64 keys of K and V, the block's Q tile, one 64-key K and V tile. Online
//     softmax: each warp keeps the running max m and sum l of its rows and rescales its O
//     accumulator when m grows; O and lse = ln(sum exp) are written at the end. Query tiles
//     run longest first (causal: tile i sees the keys up to its own).
//   flash_backward_dot_kernel<D>: grid ceil(B*T*NH/8), block 256, no smem: one warp per
//     (b, t, h) row, Dvec = rowsum(dO * O) into scratch [B,NH,T] (FlashAttention-2's
//     precomputed D: rowsum(P * dP) without P).
//   flash_backward_dkdv_kernel<D>: grid (ceil(T/128), B*NH), block 256, smem 87 / 117 KiB:
//     K and V of the block's 128 keys, staging and one tile of BQ queries of Q and dO
//     (BQ = 64, or 32 for D = 128 to bound registers), their lse and Dvec. One pass over
//     the query tiles from the block's first key on; per tile, each warp's 16 keys as rows:
//     S^T = K Q^T, P^T = exp(scale S^T - lse), dV += P^T dO, dP^T = V dO^T,
//     dS^T = P^T (dP^T - Dvec), dK += dS^T Q.
//   flash_backward_dq_kernel<D>: grid (ceil(T/128), B*NH), block 256, smem 86 / 117 KiB:
//     Q and dO of the block's 128 queries, staging and one tile of KT keys of K and V
//     (KT = 64, or 32 for D = 128). A second pass, over the key tiles: S, P, dP = dO V^T
//     and dS again, dQ += dS K.
// Splitting dK/dV from dQ (two passes, S and dP computed twice) makes every output owned
// by one block: no atomics, a fixed summation order, the same bits every run. Each
// gradient element gets exactly one += into dqkv.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/ops.h"

// The fixed-trip loops over fragments must unroll, or the register arrays they index
// become local memory. The emulator's compiler does not know the pragma.
#ifdef TESSERA_CUDA_EMULATOR
#define UNROLL
#else
#define UNROLL _Pragma("unroll")
#endif

namespace tessera::kernels::cuda {

namespace {
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kBlockRows = kWarps * 16;  // queries (forward, dQ) or keys (dK/dV) per block
constexpr int kKeyTile = 64;             // keys per step of the forward and dQ kernels
constexpr int kPad = 8;                  // bf16 past D in each shared-memory row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Queries per step of the dK/dV kernel: its registers hold dK and dV (D/2 floats each per
// thread) plus S^T and dP^T (BQ/2 each).
template <int D>
constexpr int kDkdvQueryTile = D == 64 ? 64 : 32;

// fp32 rows staged by cp.async for the next step (K and V, or Q and dO): 2 * ROWS * D floats
// at the start of shared memory, then the bf16 tiles.
template <int D>
constexpr size_t forward_smem_bytes() {
  return sizeof(float) * 2 * kKeyTile * D +
         sizeof(uint16_t) * (kBlockRows + 2 * kKeyTile) * (D + kPad);
}
template <int D>
constexpr size_t dkdv_smem_bytes() {
  constexpr int BQ = kDkdvQueryTile<D>;
  return sizeof(float) * (2 * BQ * D + 2 * BQ) +
         sizeof(uint16_t) * (2 * kBlockRows + 2 * BQ) * (D + kPad);
}
// Keys per step of the dQ kernel: 32 for D = 128 keeps its shared memory (Q, dO, K, V
// and the staging) within an A100's 163 KiB, and S and dP within registers.
template <int D>
constexpr int kDqKeyTile = D == 64 ? 64 : 32;
template <int D>
constexpr size_t dq_smem_bytes() {
  return sizeof(float) * 2 * kDqKeyTile<D> * D +
         sizeof(uint16_t) * (2 * kBlockRows + 2 * kDqKeyTile<D>) * (D + kPad);
}
// An A100 (sm_80) allows 163 KiB of shared memory per block, an H100 227 KiB.
static_assert(forward_smem_bytes<128>() <= 163 * 1024 && dkdv_smem_bytes<128>() <= 163 * 1024 &&
              dq_smem_bytes<128>() <= 163 * 1024);
}  // namespace

// Rows [row0, row0 + ROWS) of a [T, D] slice of fp32 rows `stride` floats apart, rounded
// to bf16 into shared rows of D + kPad; rows at or past T become zeros (a tail tile's
// missing keys and queries then contribute nothing, and nothing is read past the tensor).
// Consecutive threads take consecutive float4 of a row: coalesced 16-byte loads.
template <int ROWS, int D>
__device__ __forceinline__ void load_tile_bf16(uint16_t* dst, const float* src, int64_t stride,
                                               int row0, int T) {
  constexpr int kVecs = D / 4;
  UNROLL
  for (int i = threadIdx.x; i < ROWS * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row0 + r < T) v = *reinterpret_cast<const float4*>(src + (int64_t)(row0 + r) * stride + c);
    *reinterpret_cast<uint2*>(dst + r * (D + kPad) + c) =
        make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  }
}

// Starts the copy of the same rows, still fp32, into `staging` (ROWS x D floats, zeros
// past T) with cp.async: they travel while the warps compute on the previous tile. Each
// thread copies, and later converts, the same float4s, so its own cp_async_wait_all is
// all it needs before convert_tile.
template <int ROWS, int D>
__device__ __forceinline__ void stage_tile(float* staging, const float* src, int64_t stride,
                                           int row0, int T) {
  constexpr int kVecs = D / 4;
  UNROLL
  for (int i = threadIdx.x; i < ROWS * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 4;
    const bool valid = row0 + r < T;
    cp_async_16(staging + r * D + c, src + (int64_t)(valid ? row0 + r : row0) * stride + c, valid);
  }
}
// The staged rows rounded to bf16 into shared rows of D + kPad.
template <int ROWS, int D>
__device__ __forceinline__ void convert_tile(uint16_t* dst, const float* staging) {
  constexpr int kVecs = D / 4;
  UNROLL
  for (int i = threadIdx.x; i < ROWS * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 4;
    const float4 v = *reinterpret_cast<const float4*>(staging + r * D + c);
    *reinterpret_cast<uint2*>(dst + r * (D + kPad) + c) =
        make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  }
}

// acc += A B^T on one warp, A: 16 rows at `a`, B: N rows at `b` (both K columns, shared,
// rows D + kPad apart): S = Q K^T with a = Q, b = K. B^T in the MMA's "col" layout is
// B's rows read straight, so both operands are plain ldmatrix; each B load serves two
// 8-column n-tiles.
// The K/V pipeline of the forward and dQ kernels (double buffering through `staging`):
// makes key tile j, whose copy the previous call (or the prologue) started, the current
// bf16 tile in Ks and Vs, then starts the copy of tile j + 1, which overlaps this tile's
// MMAs. q points at this (b, h)'s query row 0; its K and V are C and 2C further on.
template <int KT, int D>
__device__ __forceinline__ void next_key_tile(uint16_t* Ks, uint16_t* Vs, float* staging,
                                              const float* q, int64_t stride, int j,
                                              int key_tiles, int T) {
  const int C = (int)(stride / 3);
  __syncthreads();  // every warp is done with the previous K and V tiles
  cp_async_wait_all();
  convert_tile<KT, D>(Ks, staging);
  convert_tile<KT, D>(Vs, staging + KT * D);
  __syncthreads();
  if (j + 1 < key_tiles) {
    const int next = (j + 1) * KT;
    stage_tile<KT, D>(staging, q + C, stride, next, T);
    stage_tile<KT, D>(staging + KT * D, q + 2 * C, stride, next, T);
    cp_async_commit();
  }
}

template <int N, int K, int D>
__device__ __forceinline__ void warp_mma_abt(float (&acc)[N / 8][4], const uint16_t* a,
                                             const uint16_t* b) {
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % kWarpSize;
  UNROLL
  for (int ks = 0; ks < K / 16; ks++) {
    uint32_t af[4];
    ldmatrix_x4(af, a + (lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
    UNROLL
    for (int nt = 0; nt < N / 8; nt += 2) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + (nt * 8 + lane % 8 + (lane / 16) * 8) * kStride + ks * 16 +
                          ((lane / 8) % 2) * 8);
      mma_bf16_16816(acc[nt], af, bf[0], bf[1]);
      mma_bf16_16816(acc[nt + 1], af, bf[2], bf[3]);
    }
  }
}

// acc += P B on one warp, P: the warp's 16 x K fp32 accumulators (the layout warp_mma_abt
// produces), rounded to bf16 in registers as the A operand; B: K rows of N columns at `b`
// (shared, rows D + kPad apart), read transposed by ldmatrix.trans: O = P V.
template <int N, int K, int D>
__device__ __forceinline__ void warp_mma_pb(float (&acc)[N / 8][4], const float (&p)[K / 8][4],
                                            const uint16_t* b) {
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % kWarpSize;
  UNROLL
  for (int kk = 0; kk < K / 16; kk++) {
    const uint32_t pa[4] = {pack_bf16x2(p[2 * kk][0], p[2 * kk][1]),
                            pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
                            pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
    UNROLL
    for (int nt = 0; nt < N / 8; nt += 2) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + nt * 8 +
                                (lane / 16) * 8);
      mma_bf16_16816(acc[nt], pa, bf[0], bf[1]);
      mma_bf16_16816(acc[nt + 1], pa, bf[2], bf[3]);
    }
  }
}

// dst[row, 0..D) (+)= scale * acc for the warp's 16 rows starting at row0 (rows at or past
// T skipped); dst rows are `stride` floats apart. Lane (g, t) holds rows g and g + 8,
// columns 8 n + 2t and 8 n + 2t + 1.
template <int D, bool Accumulate>
__device__ __forceinline__ void store_rows(float* dst, int64_t stride, const float (&acc)[D / 8][4],
                                           int row0, int T, float scale_lo, float scale_hi) {
  const int lane = threadIdx.x % kWarpSize, g = lane / 4, t = lane % 4;
  UNROLL
  for (int half = 0; half < 2; half++) {
    const int row = row0 + g + 8 * half;
    if (row >= T) continue;
    const float scale = half ? scale_hi : scale_lo;
    float* d = dst + (int64_t)row * stride + 2 * t;
    UNROLL
    for (int nt = 0; nt < D / 8; nt++) {
      float2 v = make_float2(acc[nt][2 * half] * scale, acc[nt][2 * half + 1] * scale);
      if constexpr (Accumulate) {
        const float2 old = *reinterpret_cast<const float2*>(d + nt * 8);
        v = make_float2(old.x + v.x, old.y + v.y);
      }
      *reinterpret_cast<float2*>(d + nt * 8) = v;
    }
  }
}

// out, lse for the 128 queries of tile (gridDim.x - 1 - blockIdx.x) of head blockIdx.y.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1)
    flash_forward_kernel(float* out, float* lse, const float* qkv, int T, int C, int NH,
                         float scale_log2) {
  constexpr int kStride = D + kPad;
  float* staging = dynamic_shared_memory<float>();  // K rows, then V rows
  uint16_t* Qs = reinterpret_cast<uint16_t*>(staging + 2 * kKeyTile * D);
  uint16_t* Ks = Qs + kBlockRows * kStride;
  uint16_t* Vs = Ks + kKeyTile * kStride;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBlockRows;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t stride = 3 * (int64_t)C;
  const float* q = qkv + (int64_t)b * T * stride + h * D;
  const int wq0 = q0 + warp * 16;  // the warp's first query
  const int row[2] = {wq0 + g, wq0 + g + 8};

  stage_tile<kKeyTile, D>(staging, q + C, stride, 0, T);
  stage_tile<kKeyTile, D>(staging + kKeyTile * D, q + 2 * C, stride, 0, T);
  cp_async_commit();
  load_tile_bf16<kBlockRows, D>(Qs, q, stride, q0, T);
  float o[D / 8][4] = {};
  // Running max m (of x = score * scale * log2 e) and sum l of exp2(x - m): l is this
  // lane's part of its two rows, summed over the row's four lanes only at the end.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int key_tiles = (min(q0 + kBlockRows, T) - 1) / kKeyTile + 1;
  for (int j = 0; j < key_tiles; j++) {
    const int k0 = j * kKeyTile;
    next_key_tile<kKeyTile, D>(Ks, Vs, staging, q, stride, j, key_tiles, T);
    if (k0 > wq0 + 15) continue;  // warp-uniform: every key is after every row of the warp
    float s[kKeyTile / 8][4] = {};
    warp_mma_abt<kKeyTile, D, D>(s, Qs + warp * 16 * kStride, Ks);
    // Causal mask where some key of the tile is past some row of the warp (this also
    // masks the zero keys past T: they are past every row < T).
    const bool diagonal = k0 + kKeyTile - 1 > wq0;
    float tile_max[2] = {-INFINITY, -INFINITY};
    UNROLL
    for (int nt = 0; nt < kKeyTile / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) {
        const int key = k0 + nt * 8 + 2 * t + (i & 1);
        float x = s[nt][i] * scale_log2;
        if (diagonal && key > row[i / 2]) x = -INFINITY;
        s[nt][i] = x;
        tile_max[i / 2] = fmaxf(tile_max[i / 2], x);
      }
    float correction[2];
    UNROLL
    for (int r = 0; r < 2; r++) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xFFFFFFFFu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xFFFFFFFFu, tile_max[r], 2));
      // Key 0 is in every row's first tile, so m is finite from the first tile on; a row
      // with every key of a later tile masked keeps its m (correction 1).
      const float m_new = fmaxf(m[r], tile_max[r]);
      correction[r] = exp2f(m[r] - m_new);
      m[r] = m_new;
      l[r] *= correction[r];
    }
    UNROLL
    for (int nt = 0; nt < kKeyTile / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) {
        const float p = exp2f(s[nt][i] - m[i / 2]);
        s[nt][i] = p;
        l[i / 2] += p;
      }
    UNROLL
    for (int nt = 0; nt < D / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) o[nt][i] *= correction[i / 2];
    warp_mma_pb<D, kKeyTile, D>(o, s, Vs);
  }

  float inv[2];
  UNROLL
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xFFFFFFFFu, l[r], 1);
    l[r] += __shfl_xor_sync(0xFFFFFFFFu, l[r], 2);
    inv[r] = 1.0f / l[r];
    // lse = ln(sum exp(score * scale)) = ln(2^m l)
    if (t == 0 && row[r] < T) lse[(int64_t)bh * T + row[r]] = (m[r] + log2f(l[r])) * kLn2;
  }
  store_rows<D, false>(out + (int64_t)b * T * C + h * D, C, o, wq0, T, inv[0], inv[1]);
}

// dvec[b, h, t] = sum over d of dout[b, t, h*D + d] * out[b, t, h*D + d]; one warp per
// (b, t, h), consecutive warps on consecutive heads of a token (contiguous memory).
template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dot_kernel(float* dvec, const float* dout, const float* out, int B, int T,
                              int C, int NH) {
  const int64_t r = (int64_t)blockIdx.x * kWarps + threadIdx.x / kWarpSize;
  if (r >= (int64_t)B * T * NH) return;  // the whole warp leaves: no shuffle is half-reached
  const int lane = threadIdx.x % kWarpSize;
  const int h = (int)(r % NH);
  const int64_t bt = r / NH;
  const float* o = out + bt * C + h * D;
  const float* d = dout + bt * C + h * D;
  float sum = 0.0f;
  UNROLL
  for (int c = 2 * lane; c < D; c += 2 * kWarpSize) {
    const float2 ov = *reinterpret_cast<const float2*>(o + c);
    const float2 dv = *reinterpret_cast<const float2*>(d + c);
    // dO as the MMAs see it (bf16), so that rowsum(P * dP) - Dvec cancels as it should
    // (to fp32 rounding at T = 1: the same products summed in another order) instead of
    // leaving dO's rounding error in every dS.
    sum += ov.x * bf16_to_float(float_to_bf16(dv.x)) + ov.y * bf16_to_float(float_to_bf16(dv.y));
  }
  sum = warp_sum(sum);
  if (lane == 0) dvec[((bt / T) * NH + h) * T + bt % T] = sum;
}

// dK, dV += for the 128 keys of tile blockIdx.x of head blockIdx.y (tile 0, which every
// query sees, first).
template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_dkdv_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                               const float* dvec, int T, int C, int NH, float scale,
                               float scale_log2) {
  constexpr int kStride = D + kPad, BQ = kDkdvQueryTile<D>;
  float* staging = dynamic_shared_memory<float>();  // Q rows, then dO rows
  float* lse_s = staging + 2 * BQ * D;              // lse * log2 e
  float* dvec_s = lse_s + BQ;
  uint16_t* Ks = reinterpret_cast<uint16_t*>(dvec_s + BQ);
  uint16_t* Vs = Ks + kBlockRows * kStride;
  uint16_t* Qs = Vs + kBlockRows * kStride;
  uint16_t* dOs = Qs + BQ * kStride;
  const int k0 = blockIdx.x * kBlockRows;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t stride = 3 * (int64_t)C;
  const float* q = qkv + (int64_t)b * T * stride + h * D;
  const float* dout_bh = dout + (int64_t)b * T * C + h * D;
  const int wk0 = k0 + warp * 16;  // the warp's first key
  const int key[2] = {wk0 + g, wk0 + g + 8};

  // Queries before k0 see none of these keys: the pass starts at k0. The next tile's lse
  // and Dvec wait in registers of the first BQ threads (a query past T gets lse = +inf,
  // so P = 0; its Q and dO rows are zeros as well).
  stage_tile<BQ, D>(staging, q, stride, k0, T);
  stage_tile<BQ, D>(staging + BQ * D, dout_bh, C, k0, T);
  cp_async_commit();
  float next_lse = 0.0f, next_dvec = 0.0f;
  if (threadIdx.x < BQ) {
    const int qi = k0 + threadIdx.x;
    next_lse = qi < T ? lse[(int64_t)bh * T + qi] * kLog2e : INFINITY;
    next_dvec = qi < T ? dvec[(int64_t)bh * T + qi] : 0.0f;
  }
  load_tile_bf16<kBlockRows, D>(Ks, q + C, stride, k0, T);
  load_tile_bf16<kBlockRows, D>(Vs, q + 2 * C, stride, k0, T);
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  for (int q0 = k0; q0 < T; q0 += BQ) {
    __syncthreads();  // every warp is done with the previous Q and dO tiles
    cp_async_wait_all();
    convert_tile<BQ, D>(Qs, staging);
    convert_tile<BQ, D>(dOs, staging + BQ * D);
    if (threadIdx.x < BQ) {
      lse_s[threadIdx.x] = next_lse;
      dvec_s[threadIdx.x] = next_dvec;
    }
    __syncthreads();
    if (q0 + BQ < T) {  // the next tile's copy overlaps this tile's MMAs
      stage_tile<BQ, D>(staging, q, stride, q0 + BQ, T);
      stage_tile<BQ, D>(staging + BQ * D, dout_bh, C, q0 + BQ, T);
      cp_async_commit();
      if (threadIdx.x < BQ) {
        const int qi = q0 + BQ + threadIdx.x;
        next_lse = qi < T ? lse[(int64_t)bh * T + qi] * kLog2e : INFINITY;
        next_dvec = qi < T ? dvec[(int64_t)bh * T + qi] : 0.0f;
      }
    }
    if (q0 + BQ - 1 < wk0) continue;  // warp-uniform: every query is before every key
    float st[BQ / 8][4] = {};         // S^T, then P^T
    warp_mma_abt<BQ, D, D>(st, Ks + warp * 16 * kStride, Qs);
    UNROLL
    for (int nt = 0; nt < BQ / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) {
        const int c = nt * 8 + 2 * t + (i & 1);  // the query, in the tile
        const float p = exp2f(st[nt][i] * scale_log2 - lse_s[c]);
        st[nt][i] = key[i / 2] > q0 + c ? 0.0f : p;  // causal
      }
    warp_mma_pb<D, BQ, D>(dv, st, dOs);  // dV += P^T dO
    float dpt[BQ / 8][4] = {};           // dP^T, then dS^T
    warp_mma_abt<BQ, D, D>(dpt, Vs + warp * 16 * kStride, dOs);
    UNROLL
    for (int nt = 0; nt < BQ / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++)
        dpt[nt][i] = st[nt][i] * (dpt[nt][i] - dvec_s[nt * 8 + 2 * t + (i & 1)]);
    warp_mma_pb<D, BQ, D>(dk, dpt, Qs);  // dK += dS^T Q (scaled at the end)
  }
  float* dqkv_bh = dqkv + (int64_t)b * T * stride + h * D;
  store_rows<D, true>(dqkv_bh + C, stride, dk, wk0, T, scale, scale);
  store_rows<D, true>(dqkv_bh + 2 * C, stride, dv, wk0, T, 1.0f, 1.0f);
}

// dQ += for the 128 queries of tile (gridDim.x - 1 - blockIdx.x) of head blockIdx.y.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1)
    flash_backward_dq_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                             const float* dvec, int T, int C, int NH, float scale,
                             float scale_log2) {
  constexpr int kStride = D + kPad, KT = kDqKeyTile<D>;
  float* staging = dynamic_shared_memory<float>();  // K rows, then V rows
  uint16_t* Qs = reinterpret_cast<uint16_t*>(staging + 2 * KT * D);
  uint16_t* dOs = Qs + kBlockRows * kStride;
  uint16_t* Ks = dOs + kBlockRows * kStride;
  uint16_t* Vs = Ks + KT * kStride;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBlockRows;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t stride = 3 * (int64_t)C;
  const float* q = qkv + (int64_t)b * T * stride + h * D;
  const int wq0 = q0 + warp * 16;
  const int row[2] = {wq0 + g, wq0 + g + 8};

  stage_tile<KT, D>(staging, q + C, stride, 0, T);
  stage_tile<KT, D>(staging + KT * D, q + 2 * C, stride, 0, T);
  cp_async_commit();
  float lse_row[2], dvec_row[2];  // lse * log2 e; rows past T are never stored
  UNROLL
  for (int r = 0; r < 2; r++) {
    lse_row[r] = row[r] < T ? lse[(int64_t)bh * T + row[r]] * kLog2e : 0.0f;
    dvec_row[r] = row[r] < T ? dvec[(int64_t)bh * T + row[r]] : 0.0f;
  }
  load_tile_bf16<kBlockRows, D>(Qs, q, stride, q0, T);
  load_tile_bf16<kBlockRows, D>(dOs, dout + (int64_t)b * T * C + h * D, C, q0, T);
  float dq[D / 8][4] = {};
  const int key_tiles = (min(q0 + kBlockRows, T) - 1) / KT + 1;
  for (int j = 0; j < key_tiles; j++) {
    const int k0 = j * KT;
    next_key_tile<KT, D>(Ks, Vs, staging, q, stride, j, key_tiles, T);
    if (k0 > wq0 + 15) continue;  // warp-uniform: every key is after every row of the warp
    float s[KT / 8][4] = {};  // S, then P, then dS
    warp_mma_abt<KT, D, D>(s, Qs + warp * 16 * kStride, Ks);
    UNROLL
    for (int nt = 0; nt < KT / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) {
        const int key = k0 + nt * 8 + 2 * t + (i & 1);
        const float p = exp2f(s[nt][i] * scale_log2 - lse_row[i / 2]);
        s[nt][i] = key > row[i / 2] ? 0.0f : p;  // causal; masks the zero keys past T too
      }
    float dp[KT / 8][4] = {};
    warp_mma_abt<KT, D, D>(dp, dOs + warp * 16 * kStride, Vs);
    UNROLL
    for (int nt = 0; nt < KT / 8; nt++)
      UNROLL
      for (int i = 0; i < 4; i++) s[nt][i] *= dp[nt][i] - dvec_row[i / 2];
    warp_mma_pb<D, KT, D>(dq, s, Ks);  // dQ += dS K (scaled at the end)
  }
  store_rows<D, true>(dqkv + (int64_t)b * T * stride + h * D, stride, dq, wq0, T, scale, scale);
}

namespace {
template <int D>
constexpr size_t largest_smem_bytes() {
  return std::max({forward_smem_bytes<D>(), dkdv_smem_bytes<D>(), dq_smem_bytes<D>()});
}

// The shared memory per block the kernels for C / NH need; 0 for a head size they lack.
size_t smem_needed(int C, int NH) {
  if (C <= 0 || NH <= 0 || C % NH != 0) return 0;
  if (C / NH == 64) return largest_smem_bytes<64>();
  if (C / NH == 128) return largest_smem_bytes<128>();
  return 0;
}

// The current GPU's opt-in shared memory per block: 163 KiB on an A100, 227 KiB on an
// H100, but 99 KiB on sm_86 / sm_89 (which run the sm_80 code), too little for D = 128.
size_t device_smem_optin() {
  int device = 0, bytes = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice (flash attention)");
  check_cuda(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute (shared memory per block)");
  return (size_t)bytes;
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The shapes and pointers the kernels take: a supported head size, B * NH within grid.y,
// and qkv / dout 16-byte aligned (cp.async) and out / dqkv 8-byte aligned (float2).
void require_supported(const char* op, int B, int C, int NH, const float* qkv,
                       const float* dout, const float* out, const float* dqkv) {
  const std::string shape = " (B=" + std::to_string(B) + ", C=" + std::to_string(C) +
                            ", NH=" + std::to_string(NH) + ")";
  const size_t needed = smem_needed(C, NH);
  check(needed > 0, std::string(op) + ": head size C / NH must be 64 or 128" + shape);
  const size_t allowed = device_smem_optin();
  check(needed <= allowed, std::string(op) + ": head size " + std::to_string(C / NH) + " needs " +
                               std::to_string(needed / 1024) +
                               " KiB of shared memory per block; this GPU allows " +
                               std::to_string(allowed / 1024) + " KiB" + shape);
  check((int64_t)B * NH <= 65535, std::string(op) + ": B * NH must be at most 65535" + shape);
  check(aligned(qkv, 16) && aligned(dout, 16) && aligned(out, 8) && aligned(dqkv, 8),
        std::string(op) + ": qkv and dout must be 16-byte aligned, out and dqkv 8-byte" + shape);
}

// Kernels past the default 48 KiB of dynamic shared memory must opt in; a cheap call,
// made at every launch so that whichever device is current has it.
template <typename Kernel>
void allow_smem(Kernel* kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
               "cudaFuncSetAttribute (flash attention shared memory)");
}

template <int D>
void forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
             cudaStream_t stream) {
  const float scale_log2 = kLog2e / std::sqrt((float)D);
  allow_smem(flash_forward_kernel<D>, forward_smem_bytes<D>());
  launch("flash_attention_forward", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}},
         flash_forward_kernel<D>, dim3((unsigned)ceil_div(T, kBlockRows), (unsigned)(B * NH)),
         dim3(kThreads), forward_smem_bytes<D>(), stream, out, lse, qkv, T, C, NH, scale_log2);
}

template <int D>
void backward(float* dqkv, float* dvec, const float* dout, const float* qkv, const float* out,
              const float* lse, int B, int T, int C, int NH, cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt((float)D), scale_log2 = kLog2e * scale;
  const dim3 tiles((unsigned)ceil_div(T, kBlockRows), (unsigned)(B * NH));
  launch("flash_attention_backward_dot", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}},
         flash_backward_dot_kernel<D>, dim3((unsigned)ceil_div((int64_t)B * T * NH, kWarps)),
         dim3(kThreads), 0, stream, dvec, dout, out, B, T, C, NH);
  allow_smem(flash_backward_dkdv_kernel<D>, dkdv_smem_bytes<D>());
  launch("flash_attention_backward_dkdv", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}},
         flash_backward_dkdv_kernel<D>, tiles, dim3(kThreads), dkdv_smem_bytes<D>(), stream,
         dqkv, dout, qkv, lse, dvec, T, C, NH, scale, scale_log2);
  allow_smem(flash_backward_dq_kernel<D>, dq_smem_bytes<D>());
  launch("flash_attention_backward_dq", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}},
         flash_backward_dq_kernel<D>, tiles, dim3(kThreads), dq_smem_bytes<D>(), stream, dqkv,
         dout, qkv, lse, dvec, T, C, NH, scale, scale_log2);
}
}  // namespace

bool flash_attention_supported(int C, int NH) {
  const size_t needed = smem_needed(C, NH);
  return needed > 0 && needed <= device_smem_optin();
}

void flash_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                             int NH, cudaStream_t stream) {
  require_supported("flash_attention_forward", B, C, NH, qkv, nullptr, out, nullptr);
  if (B <= 0 || T <= 0) return;
  if (C / NH == 64)
    forward<64>(out, lse, qkv, B, T, C, NH, stream);
  else
    forward<128>(out, lse, qkv, B, T, C, NH, stream);
}

int64_t flash_attention_scratch(int B, int T, int C, int NH) {
  (void)C;
  return (int64_t)B * NH * T;  // Dvec = rowsum(dO * O) per (b, h, t)
}

void flash_attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                              const float* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream) {
  require_supported("flash_attention_backward", B, C, NH, qkv, dout, out, dqkv);
  if (B <= 0 || T <= 0) return;
  if (C / NH == 64)
    backward<64>(dqkv, scratch, dout, qkv, out, lse, B, T, C, NH, stream);
  else
    backward<128>(dqkv, scratch, dout, qkv, out, lse, B, T, C, NH, stream);
}

}  // namespace tessera::kernels::cuda
