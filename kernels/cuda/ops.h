// The op list on the GPU: the same operations as kernels/ops.h, on device pointers, each
// enqueued on a CUDA stream. Conventions are those of kernels/ops.h (row-major, explicit
// shapes, backward functions ADD into the gradients they write); where a GPU op differs
// (scratch buffers, a saved log-sum-exp instead of probabilities) the comment says so.
//
// Every kernel is checked against its CPU twin in tests/gpu/. Activations, gradients and
// master weights are fp32, as on the CPU; in bf16 / fp16 mode the GEMM operands are the
// 16-bit copies (uint16_t, the type given by Dtype) with fp32 accumulation and output.
// The reductions are deterministic: no floating-point atomics, the same bits every run.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/mixed_precision.h"
#include "kernels/dropout.h"
#include "kernels/cuda/runtime.h"

namespace tessera::kernels::cuda {

// ---- embedding (encoder.cu) ----------------------------------------------------------
// out[B,T,C] = wte[inp[b,t], :] + wpe[t, :]
void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C, cudaStream_t stream);
// The vocabulary-parallel form (kernels/ops.h): out[B,T,C] = wte_shard[inp[b,t] -
// vocab_start, :] + wpe[t, :] where vocab_start <= inp[b,t] < vocab_start + vocab_rows,
// else 0; wpe may be null (then the wte row alone).
void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                 const float* wpe, int B, int T, int C, int vocab_start,
                                 int vocab_rows, cudaStream_t stream);
// The positions of each token id, for a deterministic embedding backward: built on the
// host from the host copy of the batch (as llm.c does), then uploaded.
// bucket_tokens[U]: the distinct token ids; bucket_start[U+1]: where each one's positions
// begin in positions[] (ascending position order inside a bucket).
// With a vocabulary shard (vocab_start, vocab_rows), only the positions of the tokens it
// holds are listed, and bucket_tokens are their rows in the shard (id - vocab_start): the
// buckets of encoder_backward for the vocabulary-parallel embedding.
struct TokenBuckets {
  std::vector<int32_t> bucket_tokens, bucket_start, positions;
};
TokenBuckets build_token_buckets(const int32_t* inp_host, int B, int T, int vocab_start = 0,
                                 int vocab_rows = std::numeric_limits<int>::max());
// dwte[bucket_tokens[u], :] += dout rows of the bucket's positions (dwte[inp[b,t], :] +=
// dout[b,t,:] with the whole vocabulary's buckets); dwpe[t,:] += dout[b,t,:] (dwpe null:
// skipped), each sum in position order.
// bucket_* and positions: device copies of build_token_buckets' arrays (U buckets).
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* bucket_tokens,
                      const int32_t* bucket_start, const int32_t* positions, int U, int B, int T,
                      int C, cudaStream_t stream);

// ---- layernorm (layernorm.cu) ---------------------------------------------------------
// out[N,C] = (inp - mean) * rstd * weight + bias per row; saves mean[N], rstd[N].
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, cudaStream_t stream);
// residual[N,C] = a + b, then out = layernorm(residual): the residual add fused in.
void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd,
                                const float* a, const float* b, const float* weight,
                                const float* bias, int N, int C, cudaStream_t stream);
// dinp += ..., dweight += ..., dbias += ... (both null: frozen). scratch: at least
// layernorm_backward_scratch(N, C) floats, for the per-block partial sums of dweight and
// dbias, which a second kernel adds in a fixed order (deterministic).
int64_t layernorm_backward_scratch(int N, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream);

// ---- elementwise (gelu.cu, residual.cu) ----------------------------------------------
void gelu_forward(float* out, const float* inp, int64_t N, cudaStream_t stream);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N,
                   cudaStream_t stream);
void residual_forward(float* out, const float* a, const float* b, int64_t N, cudaStream_t stream);
// out[N,OC] += bias[OC] on every row (a row-parallel layer's bias, after its all-reduce).
void add_bias(float* out, const float* bias, int N, int OC, cudaStream_t stream);

// ---- linear layers through cuBLASLt (matmul.cu) --------------------------------------
// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC] (bias may be null). With gelu_out not
// null, also gelu_out = gelu(out) in the GEMM's epilogue (out keeps the pre-activation
// for the backward). fp32 GEMMs use fp32 arithmetic (no TF32), so they match the CPU.
void matmul_forward(float* out, float* gelu_out, const float* inp, const float* weight,
                    const float* bias, int N, int C, int OC, cudaStream_t stream);
// The same with inp and weight given in the 16-bit type dt; accumulation and out fp32.
void matmul_forward_16bit(Dtype dt, float* out, float* gelu_out, const uint16_t* inp16,
                          const uint16_t* weight16, const float* bias, int N, int C, int OC,
                          cudaStream_t stream);
// dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout (our own
// deterministic reduction; scratch: matmul_backward_scratch(N, OC) floats). Any of dinp,
// dweight, dbias may be null (not wanted).
int64_t matmul_backward_scratch(int N, int OC);
void matmul_backward(float* dinp, float* dweight, float* dbias, float* scratch, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC,
                     cudaStream_t stream);
// The same with the GEMM operands in dt: dout16 (dout rounded), inp16, weight16; the bias
// gradient sums the exact fp32 dout.
void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias, float* scratch,
                           const float* dout, const uint16_t* dout16, const uint16_t* inp16,
                           const uint16_t* weight16, int N, int C, int OC, cudaStream_t stream);
// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, the contract of the CPU's sgemm
// (kernels/cpu/gemm.h): for LoRA's small GEMMs and the attention's batched ones.
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, cudaStream_t stream);
// `batch` such GEMMs at element strides stride_a, stride_b, stride_c.
void gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, int64_t stride_a, const float* B, int ldb, int64_t stride_b,
                  float beta, float* C, int ldc, int64_t stride_c, int batch,
                  cudaStream_t stream);
// Frees the cuBLASLt handle and workspace (at exit; they are created on first use).
void release_cublaslt();

// ---- attention (attention.cu: batched GEMMs + our causal softmax) --------------------
// As kernels/ops.h's attention_forward: out[B,T,C], att[B,NH,T,T] the probabilities
// (0 above the diagonal). scratch: attention_scratch(B, T, C, NH) floats.
int64_t attention_scratch(int B, int T, int C, int NH);
void attention_forward(float* out, float* att, float* scratch, const float* qkv, int B, int T,
                       int C, int NH, cudaStream_t stream);
// dqkv += gradient through the attention.
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH, cudaStream_t stream);

// ---- flash attention (flash_attention.cu: tiled, online softmax, bf16 mma.sync) -------
// Causal, scale 1/sqrt(HS), as attention_forward, but: q, k, v are rounded to bf16 (nearest
// even) from the fp32 qkv[B,T,3C], the probabilities are bf16 MMA operands, accumulation
// is fp32; no T×T matrix is stored: lse[B,NH,T] keeps each row's log-sum-exp (natural
// log) of the scaled scores for the backward. out[B,T,C] is fp32.
// Supported: HS = C / NH of 64 or 128 where the current GPU has the kernels' shared memory
// (flash_attention_supported says), B * NH <= 65535, any T >= 1 (tails of T not a multiple
// of the tiles are masked); qkv and dout 16-byte aligned, out and dqkv 8-byte. Needs sm_80
// or later.
bool flash_attention_supported(int C, int NH);
void flash_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                             int NH, cudaStream_t stream);
// dqkv += gradient (dq, dk, dv; dout and the P, dS operands in bf16, fp32 accumulation),
// recomputing the probabilities tile by tile from lse; out is the forward's output.
// Deterministic: each gradient element is one block's, added once, in a fixed order.
// scratch: flash_attention_scratch(B, T, C, NH) floats (rowsum(dout * out) per row).
int64_t flash_attention_scratch(int B, int T, int C, int NH);
void flash_attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                              const float* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream);

// ---- dropout (dropout.cu) -------------------------------------------------------------
// out[N,C] = inp * dropout_factor(mask, n, c); dinp += dout * the same factor: the mask of
// kernels/dropout.h, the CPU's elements kept and dropped.
void dropout_forward(float* out, const float* inp, int N, int C, const DropoutMask& mask,
                     cudaStream_t stream);
void dropout_backward(float* dinp, const float* dout, int N, int C, const DropoutMask& mask,
                      cudaStream_t stream);

// ---- classifier (crossentropy.cu) ----------------------------------------------------
// As kernels/ops.h's crossentropy_forward_backward, one pass per row (block): the softmax
// is never stored; dlogits (may alias logits, may be null) gets dloss * (p - onehot).
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, float dloss, int N, int V, int Vp,
                                   cudaStream_t stream);
// The vocabulary-parallel cross-entropy (kernels/ops.h: crossentropy_shard_stats, then the
// caller's all_gather of stats [N, 3] over the group into all_stats [ranks, N, 3], then
// crossentropy_shard_finish), one block per row. stats: this rank's {max, sum of exp,
// target logit or 0} over its first n_real of Vl columns; finish merges the ranks' stats
// in rank order (ranks <= 8 or so: every thread merges them) into the losses, and writes
// dlogits (may alias logits, may be null) as crossentropy_forward_backward does, over the
// n_real real columns (0 in the padding).
void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets, int N,
                              int Vl, int n_real, int vocab_start, cudaStream_t stream);
void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                               const float* all_stats, int ranks, const int32_t* targets,
                               float dloss, int N, int Vl, int n_real, int vocab_start,
                               cudaStream_t stream);

// ---- optimizer (adamw.cu) -------------------------------------------------------------
// As kernels/ops.h's adamw_update(_with_copy): copy16 (may be null) gets the new params in
// dt, rounded to nearest even, or stochastically (bf16 only) when stochastic_seed is not 0,
// with the random bits of element copy_offset + i (kernels/cpu/cast_bf16.h).
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t,
                  float grad_scale, uint16_t* copy16, Dtype dt, uint64_t stochastic_seed,
                  uint64_t copy_offset, cudaStream_t stream);

// ---- reductions (reductions.cu) -------------------------------------------------------
// *result (device) = sum of x[n]^2 in double, in a fixed order (deterministic).
// scratch: sum_squares_scratch(n) doubles.
int64_t sum_squares_scratch(int64_t n);
void sum_squares(double* result, double* scratch, const float* x, int64_t n, cudaStream_t stream);
// *result (device) = 1 if any of x[n] is inf or NaN, else unchanged (set it to 0 first).
void has_nonfinite(int32_t* result, const float* x, int64_t n, cudaStream_t stream);

// ---- casts (cast.cu) ------------------------------------------------------------------
// dst[n] = src rounded to dt (nearest even); dst[n] = src widened from dt; bf16 stochastic.
void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n, cudaStream_t stream);
void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n, cudaStream_t stream);
// dst[n] += src widened from dt (a 16-bit gradient added into an fp32 one).
void add_widened_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n,
                       cudaStream_t stream);
// dst[rows, cols] (contiguous) = the [rows, cols] block of src (row stride src_stride)
// rounded to dt (nearest even): the LM head's output gradient in column blocks.
void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                         int64_t src_stride, cudaStream_t stream);
void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                              uint64_t offset, cudaStream_t stream);

}  // namespace tessera::kernels::cuda
