// Token + position embedding on the GPU (kernels/cuda/ops.h: encoder_forward,
// encoder_forward_vocab_shard, build_token_buckets, encoder_backward).
//
// Forward: out[b,t,:] = wte[inp[b,t],:] + wpe[t,:], one thread per 4 channels (float4)
// when C and the pointers allow, else per channel. The vocabulary-shard form (tensor
// parallelism) reads row inp[b,t] - vocab_start of the rank's wte_shard and writes 0 for
// the tokens of other shards; wpe may be null (no learned positions). encoder_forward is
// the shard that holds every token.
//   encoder_forward_kernel: grid ceil(B*T*C/4 / 256) (or /256 of B*T*C), block 256, no smem.
//
// Backward without atomics (the llm.c "bucketed" embedding backward): the host sorts the
// positions of the batch by token id (build_token_buckets), so each distinct token's rows
// of dout form one list, in ascending position order. One block per token then walks its
// list and adds the rows into dwte[token,:] in that order: no two blocks write the same
// row, and every sum is made in the order of the CPU twin's loop over positions, so the
// result is the CPU's to the bit (both add one float at a time to the running dwte value).
//   encoder_backward_wte_kernel: grid (U, ceil(C/4 / 128)), block 128, no smem.
//   encoder_backward_wpe_kernel: grid (T, ceil(C/4 / 128)), block 128, no smem:
//     dwpe[t,:] += dout[b,t,:] for b = 0..B-1 in order, again the CPU's order; not
//     launched when dwpe is null.
// (C/4 and float4 where C % 4 == 0 and the pointers are 16-byte aligned; per channel else.)
// A vocabulary shard's backward is the same kernels on the buckets of the tokens it holds
// (build_token_buckets with vocab_start and vocab_rows), their ids shifted to shard rows.
#include <algorithm>
#include <limits>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {

constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 128;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// a + b for the kernels' Vec: float4 (4 channels per thread) or float (1).
__device__ inline float add(float a, float b) { return a + b; }
__device__ inline float4 add(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

}  // namespace

// out[b,t,c..] = wte[inp[b,t] - vocab_start, c..] + wpe[t,c..] (wpe null: no term) where
// the shard holds the token, else 0; one thread per Vec, CV = C / lanes of Vec.
template <typename Vec>
__global__ void encoder_forward_kernel(Vec* out, const int32_t* inp, const Vec* wte,
                                       const Vec* wpe, int BT, int T, int CV, int vocab_start,
                                       int vocab_rows) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)BT * CV) return;
  const int bt = (int)(i / CV), c = (int)(i % CV);
  const int t = bt % T;
  const int64_t row = (int64_t)inp[bt] - vocab_start;  // 64 bits: vocab_rows may be INT_MAX
  if (row < 0 || row >= vocab_rows) {
    out[i] = Vec{};
    return;
  }
  const Vec tok = wte[row * CV + c];
  out[i] = wpe ? add(tok, wpe[(int64_t)t * CV + c]) : tok;
}

// Block (u, y): channels [y*128, y*128+128) (in Vec units) of dwte[bucket_tokens[u], :],
// adding the dout rows of the bucket's positions in ascending order.
template <typename Vec>
__global__ void encoder_backward_wte_kernel(Vec* dwte, const Vec* dout,
                                            const int32_t* bucket_tokens,
                                            const int32_t* bucket_start,
                                            const int32_t* positions, int CV) {
  const int u = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= CV) return;
  Vec* row = dwte + (int64_t)bucket_tokens[u] * CV + c;
  Vec acc = *row;
  const int end = bucket_start[u + 1];
  int k = bucket_start[u];
  // Four rows' loads in flight at once (a frequent token has hundreds of positions), still
  // added one at a time in position order.
  for (; k + 4 <= end; k += 4) {
    const Vec d0 = dout[(int64_t)positions[k] * CV + c];
    const Vec d1 = dout[(int64_t)positions[k + 1] * CV + c];
    const Vec d2 = dout[(int64_t)positions[k + 2] * CV + c];
    const Vec d3 = dout[(int64_t)positions[k + 3] * CV + c];
    acc = add(add(add(add(acc, d0), d1), d2), d3);
  }
  for (; k < end; k++) acc = add(acc, dout[(int64_t)positions[k] * CV + c]);
  *row = acc;
}

// Block (t, y): channels [y*128, y*128+128) (in Vec units) of dwpe[t, :], adding
// dout[b, t, :] for b in ascending order.
template <typename Vec>
__global__ void encoder_backward_wpe_kernel(Vec* dwpe, const Vec* dout, int B, int T, int CV) {
  const int t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= CV) return;
  Vec* row = dwpe + (int64_t)t * CV + c;
  Vec acc = *row;
  for (int b = 0; b < B; b++) acc = add(acc, dout[((int64_t)b * T + t) * CV + c]);
  *row = acc;
}

void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                 const float* wpe, int B, int T, int C, int vocab_start,
                                 int vocab_rows, cudaStream_t stream) {
  const int BT = B * T;
  if (BT == 0 || C == 0) return;
  const std::initializer_list<ShapeArg> shape = {
      {"B", B}, {"T", T}, {"C", C}, {"vocab_start", vocab_start}, {"vocab_rows", vocab_rows}};
  if (C % 4 == 0 && aligned16(out) && aligned16(wte_shard) && aligned16(wpe)) {
    const int CV = C / 4;
    launch("encoder_forward", shape, encoder_forward_kernel<float4>,
           dim3((unsigned)ceil_div((int64_t)BT * CV, kForwardThreads)), dim3(kForwardThreads), 0,
           stream, reinterpret_cast<float4*>(out), inp,
           reinterpret_cast<const float4*>(wte_shard), reinterpret_cast<const float4*>(wpe), BT,
           T, CV, vocab_start, vocab_rows);
  } else {
    launch("encoder_forward", shape, encoder_forward_kernel<float>,
           dim3((unsigned)ceil_div((int64_t)BT * C, kForwardThreads)), dim3(kForwardThreads), 0,
           stream, out, inp, wte_shard, wpe, BT, T, C, vocab_start, vocab_rows);
  }
}

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C, cudaStream_t stream) {
  encoder_forward_vocab_shard(out, inp, wte, wpe, B, T, C, 0, std::numeric_limits<int>::max(),
                              stream);
}

TokenBuckets build_token_buckets(const int32_t* inp_host, int B, int T, int vocab_start,
                                 int vocab_rows) {
  const int BT = B * T;
  TokenBuckets buckets;
  // The shard's rows (64 bits: vocab_rows may be INT_MAX).
  auto row = [&](int32_t position) { return (int64_t)inp_host[position] - vocab_start; };
  // The positions of the shard's tokens, sorted by token id; stable, so each token's
  // positions stay ascending.
  buckets.positions.reserve((size_t)BT);
  for (int32_t p = 0; p < BT; p++)
    if (row(p) >= 0 && row(p) < vocab_rows) buckets.positions.push_back(p);
  std::stable_sort(buckets.positions.begin(), buckets.positions.end(),
                   [&](int32_t a, int32_t b) { return inp_host[a] < inp_host[b]; });
  const int count = (int)buckets.positions.size();
  for (int k = 0; k < count; k++) {
    const int32_t shard_row = (int32_t)row(buckets.positions[(size_t)k]);
    if (buckets.bucket_tokens.empty() || buckets.bucket_tokens.back() != shard_row) {
      buckets.bucket_tokens.push_back(shard_row);
      buckets.bucket_start.push_back(k);
    }
  }
  buckets.bucket_start.push_back(count);
  return buckets;
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* bucket_tokens,
                      const int32_t* bucket_start, const int32_t* positions, int U, int B, int T,
                      int C, cudaStream_t stream) {
  if (B * T == 0 || C == 0) return;
  const bool vec = C % 4 == 0 && aligned16(dwte) && aligned16(dwpe) && aligned16(dout);
  const int CV = vec ? C / 4 : C;
  const unsigned chunks = (unsigned)ceil_div(CV, kBackwardThreads);
  if (U > 0) {
    if (vec)
      launch("encoder_backward_wte", {{"U", U}, {"C", C}}, encoder_backward_wte_kernel<float4>,
             dim3((unsigned)U, chunks), dim3(kBackwardThreads), 0, stream,
             reinterpret_cast<float4*>(dwte), reinterpret_cast<const float4*>(dout),
             bucket_tokens, bucket_start, positions, CV);
    else
      launch("encoder_backward_wte", {{"U", U}, {"C", C}}, encoder_backward_wte_kernel<float>,
             dim3((unsigned)U, chunks), dim3(kBackwardThreads), 0, stream, dwte, dout,
             bucket_tokens, bucket_start, positions, CV);
  }
  if (dwpe == nullptr) return;
  if (vec)
    launch("encoder_backward_wpe", {{"B", B}, {"T", T}, {"C", C}},
           encoder_backward_wpe_kernel<float4>, dim3((unsigned)T, chunks), dim3(kBackwardThreads),
           0, stream, reinterpret_cast<float4*>(dwpe), reinterpret_cast<const float4*>(dout), B,
           T, CV);
  else
    launch("encoder_backward_wpe", {{"B", B}, {"T", T}, {"C", C}},
           encoder_backward_wpe_kernel<float>, dim3((unsigned)T, chunks), dim3(kBackwardThreads),
           0, stream, dwpe, dout, B, T, CV);
}

}  // namespace tessera::kernels::cuda
