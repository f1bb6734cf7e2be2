// Tessera's op list: one function per operation, explicit shapes, llm.c style.
//
// Conventions (read these once, they hold for every function below):
// - Tensors are contiguous row-major; shapes are given in brackets, e.g. inp [N, C].
//   N is the number of token positions (B * T) where an op does not care about B and T.
// - T is float (training) or double (the finite-difference tests).
// - Backward functions ADD into every gradient they write (dinp, dweight, dbias, ...),
//   as llm.c does: parameter gradients accumulate over micro-batches, and activation
//   gradients accumulate where a tensor feeds two places (the residual stream). Callers
//   zero a gradient buffer before its first use.
// - Weights of a linear layer are stored [OC, C] (out-features first, like PyTorch):
//   out = inp @ weight^T + bias.
// - Every kernel runs on the calling process's OpenMP threads. GEMMs go to Tessera's own
//   AVX-512 SGEMM (kernels/cpu/gemm.h) rather than Eigen's or a BLAS: it is the fastest
//   of the three on the machines Tessera targets (docs/performance.md).
//
// The CPU implementation of each op is in kernels/cpu/ under the op's name (encoder.cpp,
// layernorm.cpp, matmul.cpp, attention.cpp, gelu.cpp, residual.cpp, crossentropy.cpp,
// adamw.cpp, reductions.cpp, dropout.cpp, and for the Llama family rmsnorm.cpp, rope.cpp,
// swiglu.cpp); the GEMMs they call in gemm*.{h,cpp}, the
// fp32 <-> bf16 / fp16 casts in cast_bf16.* and cast_fp16.*, the 16-bit dispatch in
// mixed_precision.*. kernels/backend.h puts this list behind the device seam.
#pragma once
#include <cstdint>

#include "kernels/cpu/mixed_precision.h"
#include "kernels/dropout.h"

namespace tessera::kernels {

// out[B,T,C] = wte[inp[b,t], :] + wpe[t, :]  (token + learned position embedding)
template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tn, int C);
// dwte[inp[b,t], :] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:]
template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tn, int C);

// The embedding of a vocabulary-parallel model, where this rank holds the token rows
// vocab_start .. vocab_start + vocab_rows - 1 of wte as wte_shard [vocab_rows, C]; wpe [T, C]
// may be null (no learned positions: the Llama family).
// out[B,T,C]: wte_shard[inp[b,t] - vocab_start, :] + wpe[t, :] where this shard holds the
// token, else 0. Summed over the shards (an all-reduce) it is encoder_forward's result to
// the bit: one term per position is non-zero.
template <typename T>
void encoder_forward_vocab_shard(T* out, const int32_t* inp, const T* wte_shard, const T* wpe,
                                 int B, int Tn, int C, int vocab_start, int vocab_rows);
// dwte_shard[inp[b,t] - vocab_start, :] += dout[b,t,:] for the tokens this shard holds;
// dwpe[t,:] += dout[b,t,:] at every position (dwpe null: skipped). Sums in position order,
// so vocab_start 0, vocab_rows V gives encoder_backward's bits.
template <typename T>
void encoder_backward_vocab_shard(T* dwte_shard, T* dwpe, const T* dout, const int32_t* inp, int B,
                                  int Tn, int C, int vocab_start, int vocab_rows);

// out[N,C] = (inp - mean) * rstd * weight + bias, per row; saves mean[N] and rstd[N]
// (eps = 1e-5, biased variance, as torch.nn.LayerNorm).
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int N, int C);
// (dweight and dbias both null: frozen, only dinp is computed)
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const T* mean, const T* rstd, int N, int C);

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]   (bias may be null)
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC);
// dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout
// (dweight or dbias null: not computed, e.g. a frozen base weight under LoRA)
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int N, int C, int OC);

// Mixed precision (kernels/cpu/mixed_precision.h): the same linear layer with inp, weight and the
// backward's dout given in the 16-bit type dt, products summed in fp32; out, bias and
// every gradient stay fp32. The backward needs dout twice: rounded (dout16) for the two
// GEMMs, exact (dout) for the bias.
// out[N,OC] = inp16[N,C] @ weight16[OC,C]^T + bias[OC]   (bias may be null)
void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16, const uint16_t* weight16,
                          const float* bias, int N, int C, int OC);
// dinp += dout16 @ weight16; dweight += dout16^T @ inp16; dbias += column sums of dout
// (dinp, dweight or dbias may be null: not wanted)
void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias, const float* dout,
                           const uint16_t* dout16, const uint16_t* inp16,
                           const uint16_t* weight16, int N, int C, int OC);

// Causal multi-head self-attention.
// qkv [B,T,3C] holds q, k, v for all heads (head h uses columns h*HS..(h+1)*HS of each
// third, HS = C/NH); out [B,T,C]; att [B,NH,T,T] saves the softmax probabilities
// (entries above the diagonal are 0). Scores are scaled by 1/sqrt(HS).
// Each (b, h) is computed as small GEMMs on strided views of qkv (no transposes copied).
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH);
// dqkv += gradient through the attention; scratch [B,NH,T,T] is overwritten.
template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att,
                        int B, int Tn, int C, int NH);

// Grouped-query attention (Llama): NH query heads, NKV key/value heads (NKV divides NH;
// query head h reads key/value head h / (NH / NKV)), head size HS. q [B,T,q_stride] holds
// the NH query heads at the start of each row, k and v [B,T,kv_stride] the NKV key and
// value heads; out [B,T,NH*HS]; att [B,NH,T,T] as above. attention_forward is the case
// NKV = NH with q, k, v the thirds of a qkv row.
template <typename T>
void gqa_attention_forward(T* out, T* att, const T* q, const T* k, const T* v, int B, int Tn,
                           int NH, int NKV, int HS, int q_stride, int kv_stride);
// dq, dk, dv += the gradient through the attention (laid out as q, k, v; dK and dV summed
// over each group's query heads in a fixed order); scratch [B,NH,T,T] is overwritten.
template <typename T>
void gqa_attention_backward(T* dq, T* dk, T* dv, T* scratch, const T* dout, const T* q, const T* k,
                            const T* v, const T* att, int B, int Tn, int NH, int NKV, int HS,
                            int q_stride, int kv_stride);

// Rotary position embedding (Hugging Face Llama's rotate-half convention, rope.cpp): in
// each of `heads` heads of HS values at the start of every row of x [B,T,stride] (the
// query and key heads of a qkv row), the pair (x[i], x[i + HS/2]), i < HS/2, at position t
// is rotated by the angle t * theta^(-2i/HS), in place. The backward rotates dx back.
// cos_table, sin_table [T, HS/2] from rope_table (angles computed in double).
template <typename T>
void rope_table(T* cos_table, T* sin_table, int Tn, int HS, double theta);
template <typename T>
void rope_forward(T* x, const T* cos_table, const T* sin_table, int B, int Tn, int heads, int HS,
                  int stride);
template <typename T>
void rope_backward(T* dx, const T* cos_table, const T* sin_table, int B, int Tn, int heads, int HS,
                   int stride);

// out[N,C] = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps) per row, saved in
// rstd[N] (RMSNorm, no bias).
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps);
// (dweight null: frozen, only dinp is computed)
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int N, int C);

// out[N] = silu(gate) * up, silu(x) = x * sigmoid(x)   (SwiGLU, elementwise)
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t N);
// dgate, dup += the gradient through it
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* gate, const T* up, const T* dout, int64_t N);

// out[N] = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's tanh approximation)
template <typename T>
void gelu_forward(T* out, const T* inp, int64_t N);
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t N);

// out[N] = a + b. The backward of a residual add is the identity into both inputs, so the
// model accumulates the residual stream's gradient in one buffer instead of calling a kernel.
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t N);

// out[N,OC] += bias[OC] on every row: the bias of a row-parallel linear layer, added once
// after the all-reduce of the ranks' partial outputs (matmul.cpp, which adds biases too).
template <typename T>
void add_bias(T* out, const T* bias, int N, int OC);

// out[N,C] = inp with each element dropped (0) or kept and scaled by 1 / (1 - p), as the
// counter-based mask says (kernels/dropout.h); the backward adds dout masked the same way.
void dropout_forward(float* out, const float* inp, int N, int C, const DropoutMask& mask);
void dropout_backward(float* dinp, const float* dout, int N, int C, const DropoutMask& mask);

// Fused softmax + cross-entropy over the first V of Vp logit columns (the padded columns
// V..Vp-1 are masked out: probability 0, gradient 0).
// losses[N] = -log softmax(logits[n, :V])[targets[n]]. If dlogits is not null, also
// writes dlogits[N,Vp] = dloss * (softmax - onehot(target)); dlogits may alias logits
// (the logits are then consumed), which saves a [N, Vp] buffer.
template <typename T>
void crossentropy_forward_backward(T* losses, T* dlogits, const T* logits, const int32_t* targets,
                                   T dloss, int N, int V, int Vp);

// The same loss over a vocabulary split across the ranks of a tensor-parallel group, in
// two steps around an all_gather of [N, 3] statistics that the caller does:
// 1. crossentropy_shard_stats: logits [N, Vl] are this rank's columns vocab_start ..
//    vocab_start + Vl - 1, of which the first n_real are real (0 <= n_real <= Vl; the rest
//    are the padded vocabulary's). stats[N, 3] per row: {m, s, x_t} with m the max over the
//    real columns (-inf if none), s = sum over them of exp(x - m) (0 if none), x_t the
//    target's logit if this rank holds targets[n] among its real columns, else 0.
template <typename T>
void crossentropy_shard_stats(T* stats, const T* logits, const int32_t* targets, int N, int Vl,
                              int n_real, int vocab_start);
// 2. crossentropy_shard_finish: all_stats [ranks, N, 3] is every rank's stats in rank
//    order. Per row, the ranks' (m, s) merge in rank order into (M, S) (log-sum-exp:
//    M = max, S = sum of s * exp(m - M); an empty shard adds nothing) and x_t is the sum
//    of theirs, so every rank computes the same losses[N] = log(S) - (x_t - M) to the
//    bit. If dlogits is not null (it may alias logits), dlogits[N, Vl] = exp(x - M) *
//    (dloss / S) - dloss [column is the target] in the real columns, 0 in the padding.
//    With ranks 1, vocab_start 0, Vl = Vp, n_real = V it is crossentropy_forward_backward
//    (to rounding: the terms are the same, summed alike).
template <typename T>
void crossentropy_shard_finish(T* losses, T* dlogits, const T* logits, const T* all_stats,
                               int ranks, const int32_t* targets, T dloss, int N, int Vl,
                               int n_real, int vocab_start);

// AdamW on n parameters (decoupled weight decay, bias-corrected moments, step t >= 1),
// with g = grad_scale * grads (gradient clipping folded in, saving a pass over grads):
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (mhat / (sqrt(vhat) + eps) + wd p)
template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t, float grad_scale = 1.0f);
// The same on fp32 parameters, also writing copy16[i] = the new params[i] rounded to the
// 16-bit type dt (nearest even): mixed precision's compute copy, made in the same pass
// instead of a second one over all the weights.
void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t, float grad_scale, uint16_t* copy16, Dtype dt);

// Sum of squares of x[n], accumulated in double (for the global gradient norm).
template <typename T>
double sum_squares(const T* x, int64_t n);

// True if any of x[0..n) is inf or NaN (fp16 loss scaling's overflow check); bit tests,
// so fast-math flags cannot remove it.
bool has_nonfinite(const float* x, int64_t n);

}  // namespace tessera::kernels
