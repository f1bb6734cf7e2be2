// Warp-level tensor-core primitives: the bf16 m16n8k16 MMA, ldmatrix, bf16x2 packing, and
// cp.async (global to shared memory in the background).
//
// Under nvcc they are one PTX instruction each (sm_80 and later). Under the CUDA emulator
// (TESSERA_CUDA_EMULATOR) every lane posts its registers to the warp
// (emulator::warp_all_gather) and computes its own outputs from the documented fragment
// layouts, so a kernel that puts the wrong element in a register fails its emulated test.
//
// The layouts, from the PTX ISA (section 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16
// with floating point type", Figures 79, 81, 83; and 9.7.14.5.15 "Warp-level matrix load
// instruction: ldmatrix"), with g = lane / 4 (groupID) and t = lane % 4
// (threadID_in_group); a 32-bit register holds two bf16, the lower-numbered element in
// the low 16 bits ("Elements (low to high)"):
//   A (16x16, row-major), a[4]:  a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//                                a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, "col": B[k][n]), b0, b1:  b0 = B[2t..2t+1][g]  b1 = B[2t+8..2t+9][g]
//   C, D (16x8 fp32), c[4]:  c[0], c[1] = C[g][2t], C[g][2t+1];  c[2], c[3] = row g+8
// Cross-checked against a public implementation, ggml's CUDA mma tiles
// (ikawrakow/ik_llama.cpp, ggml/src/ggml-cuda/mma_new.cuh): tile<16,8,half2> (A),
// tile<8,8,half2> (B) and tile<16,8,float> (C) get_i/get_j give the same rows and
// columns; its load_ldmatrix lane addresses and its shuffle fallback for movmatrix (a
// transpose) give the same ldmatrix and .trans layouts as below.
//
// Consequences the kernels rely on: B = X^T for a row-major X[n][k] (keys, for S = Q K^T)
// is one plain ldmatrix of X; B = Y for a row-major Y[k][n] (values, for O = P V) is an
// ldmatrix.trans of Y; and the fp32 accumulator of one MMA, packed to bf16 pairwise, is
// already the A fragment of the next (c of n-tiles 2j and 2j+1 = a of k-step j), so the
// probabilities never leave registers.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/device_math.cuh"

namespace tessera::kernels::cuda {

// Two floats as bf16x2 (lo in the low half), rounded to nearest even: the same bits as
// the CPU's fp32_to_bf16 for every non-NaN value (cvt.rn.bf16x2.f32 puts its first
// source operand in the HIGH half, hence the operand order).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(lo), "f"(hi));
  return r;
#else
  return (uint32_t)float_to_bf16(lo) | ((uint32_t)float_to_bf16(hi) << 16);
#endif
}

#ifdef TESSERA_CUDA_EMULATOR
namespace mma_emulation {
inline float bf16_at(uint32_t reg, int half) {
  return bf16_to_float((uint16_t)(half ? reg >> 16 : reg & 0xFFFFu));
}
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of matrix i (16-byte rows of eight
// 16-bit elements); register i of lane l gets row l/4, elements 2(l%4), 2(l%4)+1 of
// matrix i, or with .trans column l/4, rows 2(l%4), 2(l%4)+1 ("loaded in column-major").
inline void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row, bool trans) {
  const uint16_t* rows[32];
  emulator::warp_all_gather(&row, rows, sizeof(row));
  const int lane = emulator::lane_id(), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; i++) {
    const uint16_t lo = trans ? rows[8 * i + 2 * t][g] : rows[8 * i + g][2 * t];
    const uint16_t hi = trans ? rows[8 * i + 2 * t + 1][g] : rows[8 * i + g][2 * t + 1];
    r[i] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
}
// d += A B for the warp's fragments (layouts at the top of the file). The products of two
// bf16 are exact in fp32; the sum order of the hardware is unspecified, here k = 0..15.
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  uint32_t all[32][6];
  emulator::warp_all_gather(mine, all, sizeof(mine));
  const int lane = emulator::lane_id(), g = lane / 4, t = lane % 4;
  // A[row][k] is held by lane 4 (row % 8) + (k % 8) / 2 in register (row >= 8) + 2 (k >= 8);
  // B[k][col] by lane 4 col + (k % 8) / 2 in register (k >= 8).
  for (int i = 0; i < 4; i++) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; k++) {
      const float av = bf16_at(all[4 * (row % 8) + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)], k & 1);
      const float bv = bf16_at(all[4 * col + (k % 8) / 2][4 + (k >= 8)], k & 1);
      sum += av * bv;
    }
    d[i] += sum;
  }
}
// cp.async: each CUDA thread's copies wait here until its cp_async_wait_all, the latest
// moment the hardware may land them, so a kernel that reads a copy before waiting for it
// reads stale shared memory (NaN at first) and fails its test. The source is read at the
// issue. Copies a thread of an earlier block left unwaited are dropped (that block's
// shared memory is gone), told apart by block, grid and shared-memory base.
struct PendingCopy {
  void* dst;
  unsigned char data[16];
  dim3 block, grid;
  void* smem;
};
inline bool same_block(const PendingCopy& c) {
  const dim3 b = emulator::block_idx(), g = emulator::grid_dim();
  return c.block.x == b.x && c.block.y == b.y && c.block.z == b.z && c.grid.x == g.x &&
         c.grid.y == g.y && c.grid.z == g.z && c.smem == emulator::dynamic_shared_memory();
}
inline std::vector<PendingCopy>& pending_copies() {
  static std::vector<PendingCopy> pending[1024];  // per thread of the running block
  const dim3 t = emulator::thread_idx(), d = emulator::block_dim();
  return pending[t.x + d.x * (t.y + d.y * t.z)];
}
inline void issue_copy(void* dst, const void* src, bool valid) {
  PendingCopy c{dst, {}, emulator::block_idx(), emulator::grid_dim(),
                emulator::dynamic_shared_memory()};
  if (valid) std::memcpy(c.data, src, 16);
  pending_copies().push_back(c);
}
inline void land_copies() {
  for (const PendingCopy& c : pending_copies())
    if (same_block(c)) std::memcpy(c.dst, c.data, 16);
  pending_copies().clear();
}
}  // namespace mma_emulation
#endif

// d[4] += A B: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, B given as its two
// registers b0, b1. Every lane of the warp must execute it together (warp-uniform
// control flow).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
#ifdef TESSERA_CUDA_EMULATOR
  mma_emulation::mma_bf16_16816(d, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
  __trap();  // bf16 MMA needs sm_80; the build targets sm_80 and sm_90 only
#endif
}

// Four 8x8 matrices of 16-bit elements from shared memory: lane l passes the address of
// row l % 8 of matrix l / 8 (16-byte aligned). Register i holds lane l's fragment of
// matrix i: row l/4, elements 2(l%4) and 2(l%4)+1 (ldmatrix_x4), or the transpose:
// column l/4, rows 2(l%4) and 2(l%4)+1 (ldmatrix_x4_trans).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
#ifdef TESSERA_CUDA_EMULATOR
  mma_emulation::ldmatrix_x4(r, row, false);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* row) {
#ifdef TESSERA_CUDA_EMULATOR
  mma_emulation::ldmatrix_x4(r, row, true);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// cp.async.cg: 16 bytes from global to shared memory (16-byte aligned both), in the
// background, cached in L2 only; with valid false nothing is read and the 16 bytes become
// zeros (src-size 0 < cp-size: "remaining bytes in destination dst are filled with
// zeros", PTX ISA 9.7.9.25.3.1). After cp_async_commit and cp_async_wait_all a thread
// sees its own copies; other threads see them after a barrier. The emulator makes the
// copies at the wait (mma_emulation::pending_copies).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#ifdef TESSERA_CUDA_EMULATOR
  mma_emulation::issue_copy(smem, gmem, valid);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(addr), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if !defined(TESSERA_CUDA_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef TESSERA_CUDA_EMULATOR
  mma_emulation::land_copies();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 0;" ::: "memory");
#endif
}

}  // namespace tessera::kernels::cuda
