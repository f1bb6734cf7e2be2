// Internal to framework/model/gpt2*.cpp: the pointers into a flat parameter buffer and
// the activation arena of one micro-batch in flight.
#pragma once
#include <cstdint>

#include "framework/model/gpt_model.h"

namespace tessera {

// Pointers to one copy (parameters or gradients) of every tensor; null where the family
// has none (llama: wpe, biases, ln*_b, qkv_w; gpt2: lm_head, q_w, k_w, v_w, gate_w).
struct GPTModel::ParamPtrs {
  float *wte, *wpe, *lnf_w, *lnf_b, *lm_head;  // lm_head: llama's untied head
  struct Block {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;  // proj: llama's o
    float *ln2_w, *ln2_b, *up_w, *up_b, *down_w, *down_b;
    float *q_w, *k_w, *v_w, *gate_w;
  };
  std::vector<Block> blocks;
};

// The activation arena of one micro-batch in flight (a slot), in the backend's memory.
// Per-layer tensors are stored [L][max N * width] (L = this stage's layers) so that the
// backward pass finds every layer's inputs; the backward scratch exists once, for one
// layer, and all slots point to the same scratch. (A kernel's own scratch, such as the
// attention backward's, is the backend's.) The widths are those of GPTModel::widths(); the
// llama family uses the same members: ln1/ln2 are its RMSNorm outputs (no means kept),
// qkv holds its q, k and v blocks one after another ([N, q] then [N, kv] twice, after the
// rotary embedding), fch its gate and up blocks ([N, F] twice) and fch_gelu the SwiGLU
// output.
struct GPTModel::Activations {
  int64_t maxN;  // max_batch * seq_len
  float* encoded;                       // [N, C]   the stage's input: embedding output or x_in
  float *ln1, *ln1_mean, *ln1_rstd;     // [L, N, C], [L, N], [L, N]
  float* qkv;                           // [L, N, 3C]
  float* atty;                          // [L, N, C]   attention output before projection
  float* att;                           // [L, B, NH, T, T] softmax probabilities
  float* residual2;                     // [L, N, C]   residual + attention branch
  float *ln2, *ln2_mean, *ln2_rstd;     // [L, N, C], [L, N], [L, N]
  float* fch;                           // [L, N, 4C]  MLP up, before GELU
  float* fch_gelu;                      // [L, N, 4C]
  float* residual3;                     // [L, N, C]   block output
  float *lnf, *lnf_mean, *lnf_rstd;     // [N, C], [N], [N]       (last stage)
  float* logits;                        // [N, Vp]     dlogits in place during backward
  float* losses;                        // [N]
  // Mixed precision: the linear layers' inputs in 16 bits, [L, N, width] (ln1, atty, ln2,
  // fch_gelu) and [N, C] (lnf), and the outputs of qkv and MLP-up rounded to 16 bits (as
  // torch.autocast's matmul outputs are); their fp32 members above then hold one layer,
  // transiently (the backward pass widens qkv and fch back into them).
  uint16_t *ln1_16, *qkv_16, *atty_16, *ln2_16, *fch_16, *fch_gelu_16, *lnf_16;
  float* lora_h;                        // [L, 4, N, r]  LoRA: x @ A^T of each target
  // shared scratch
  float* branch;                        // [N, C]      attention / MLP projection output
  float* dresidual;                     // [N, C]  gradient of the residual stream
  float* dln;                           // [N, C]
  float* dqkv;                          // [N, 3C]
  float* datty;                         // [N, C]
  float* dfch;                          // [N, 4C] (gradient of fch and of fch_gelu in turn)
  float* dfch_gelu;                     // [N, 4C]
  uint16_t* scratch16;                  // [N, widest]  mixed precision: dout rounded
  float* scratch;                       // [N, widest]  LoRA in mixed precision: x widened
  float* scratch2;                      // [N, widest]  LoRA dropout: the dropped input
  float* lora_dh;                       // [N, r]
  float* softmax_stats;                 // [tp, N, 3]  vocabulary-parallel cross-entropy
  DropoutKey dropout;                   // of the pass on this slot (LoRA)
};

}  // namespace tessera
