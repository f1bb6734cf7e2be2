// The llama family inside the one transformer module (gpt_model.h): its parameters and its
// block's forward and backward passes. What differs from GPT-2's block:
//   x -> RMSNorm -> q, k, v (separate column-parallel layers, no biases) -> rotary
//   embedding of q and k -> grouped-query attention -> o (row-parallel) -> + x
//     -> RMSNorm -> gate, up (column-parallel) -> silu(gate) * up -> down (row-parallel) -> + x
// Tensor parallelism splits the query heads, the key/value heads (n_kv_head / tp each) and
// the MLP's hidden width F over the ranks, as Megatron-LM does; the rest (embeddings, the
// head, LoRA, mixed precision, pipeline stages) is the module's, shared with GPT-2.
#include <cmath>
#include <string>

#include "base/error.h"
#include "framework/model/gpt_model.h"
#include "framework/model/gpt_model_internal.h"

namespace tessera {

// Only this stage's parameters (this tp rank's slices), under Llama's logical names. With
// tied embeddings the last stage holds a copy of tok_embeddings as GPT-2's holds wte's;
// untied, it holds lm_head. Every weight is N(0, 0.02) (Hugging Face's initializer_range),
// the norms 1.
void GPTModel::lay_out_llama_parameters() {
  const int64_t C = config_.n_embd, Vp = config_.padded_vocab_size, L = stage_.num_layers;
  const int64_t Ckv = (int64_t)config_.kv_heads() * config_.head_size(), F = config_.mlp_width();
  const bool decay = true, no_decay = false;
  const ShardSpec rows{0, 1, tp_.rank, tp_.size}, cols{1, 1, tp_.rank, tp_.size};
  const bool tied = config_.tied();
  if (stage_.is_first() || (stage_.is_last() && tied)) {
    wte_index_ = table_.add("tok_embeddings.weight", {Vp, C}, Init::Normal, 0.02f, no_decay, rows);
    table_.set_tied_copy(wte_index_, !stage_.is_first());
  }
  block0_index_ = (int)table_.params().size();
  for (int l = stage_.first_layer; l < stage_.first_layer + L; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    table_.add(h + "attn_norm.weight", {C}, Init::Ones, 0, no_decay);
    table_.add(h + "attn.q.weight", {C, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "attn.k.weight", {Ckv, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "attn.v.weight", {Ckv, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "attn.o.weight", {C, C}, Init::Normal, 0.02f, decay, cols);
    table_.add(h + "mlp_norm.weight", {C}, Init::Ones, 0, no_decay);
    table_.add(h + "mlp.gate.weight", {F, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "mlp.up.weight", {F, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "mlp.down.weight", {C, F}, Init::Normal, 0.02f, decay, cols);
  }
  if (stage_.is_last()) {
    lnf_index_ = table_.add("norm.weight", {C}, Init::Ones, 0, no_decay);
    if (!tied) lm_head_index_ = table_.add("lm_head.weight", {Vp, C}, Init::Normal, 0.02f, decay, rows);
  }
}

GPTModel::RopeTables GPTModel::rope_tables() const {
  const float* cos = rope_.data();
  return {cos, cos + (int64_t)config_.seq_len * (config_.head_size() / 2)};
}

void GPTModel::llama_block_forward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g,
                               int B, int T) {
  const int C = config_.n_embd, hs = config_.head_size();
  const int NH = config_.n_head / tp_.size, NKV = config_.kv_heads() / tp_.size;
  const Widths w = widths();
  const int64_t N = (int64_t)B * T, maxN = a.maxN;
  const int64_t h32 = mixed_ ? 0 : 1;  // fp32 runs keep every layer's inputs in fp32
  const float* residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * maxN * C;
  float* ln1 = a.ln1 + h32 * l * maxN * C;
  float* q = a.qkv + h32 * l * maxN * w.qkv;  // then k and v, [N, kv] each
  float* k = q + N * w.q;
  float* v = k + N * w.kv;
  float* atty = a.atty + h32 * l * maxN * w.q;
  float* residual2 = a.residual2 + l * maxN * C;
  float* ln2 = a.ln2 + h32 * l * maxN * C;
  float* gate = a.fch + h32 * l * maxN * w.mlp_in;  // then up, [N, F]
  float* up = gate + N * w.mlp;
  float* hidden = a.fch_gelu + h32 * l * maxN * w.mlp;
  auto in16 = [&](uint16_t* base, int64_t width) {
    return mixed_ ? base + l * maxN * width : nullptr;
  };
  const LinearContext ctx = linear_context();
  auto linear = [&](LoraTarget t, float* out, const float* x, uint16_t* x16) {
    linear_forward(block_linear(l, t, p, g, &a, T), ctx, out, x, x16, lora_h(a, l, t), (int)N);
  };
  const RopeTables rope = rope_tables();
  const float eps = config_.norm_eps;

  backend_.rmsnorm_forward(ln1, a.ln1_rstd + l * maxN, residual, p.blocks[l].ln1_w, (int)N, C, eps);
  linear(LoraTarget::q, q, ln1, in16(a.ln1_16, C));
  linear(LoraTarget::k, k, ln1, in16(a.ln1_16, C));
  linear(LoraTarget::v, v, ln1, in16(a.ln1_16, C));
  backend_.rope_forward(q, rope.cos, rope.sin, B, T, NH, hs, (int)w.q);
  backend_.rope_forward(k, rope.cos, rope.sin, B, T, NKV, hs, (int)w.kv);
  if (mixed_) keep_16bit(q, in16(a.qkv_16, w.qkv), N * w.qkv);
  backend_.gqa_attention_forward(atty, a.att + l * attention_saved_stride(), q, k, v, B, T, NH,
                                 NKV, hs, (int)w.q, (int)w.kv);
  linear(LoraTarget::attn_out, a.branch, atty, in16(a.atty_16, w.q));
  backend_.residual_forward(residual2, residual, a.branch, N * C);
  backend_.rmsnorm_forward(ln2, a.ln2_rstd + l * maxN, residual2, p.blocks[l].ln2_w, (int)N, C, eps);
  linear(LoraTarget::mlp_gate, gate, ln2, in16(a.ln2_16, C));
  linear(LoraTarget::mlp_up, up, ln2, in16(a.ln2_16, C));
  if (mixed_) keep_16bit(gate, in16(a.fch_16, w.mlp_in), N * w.mlp_in);
  backend_.swiglu_forward(hidden, gate, up, N * w.mlp);
  linear(LoraTarget::mlp_down, a.branch, hidden, in16(a.fch_gelu_16, w.mlp));
  backend_.residual_forward(a.residual3 + l * maxN * C, residual2, a.branch, N * C);
}

// a.dresidual holds d(block output) on entry and d(block input) on return.
void GPTModel::llama_block_backward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g,
                                int B, int T) {
  const int C = config_.n_embd, hs = config_.head_size();
  const int NH = config_.n_head / tp_.size, NKV = config_.kv_heads() / tp_.size;
  const Widths w = widths();
  const int64_t N = (int64_t)B * T, maxN = a.maxN;
  const LinearContext ctx = linear_context();
  auto zero = [this](float* x, int64_t n) { backend_.zero(x, n); };
  const auto& pw = p.blocks[l];
  const auto& gw = g.blocks[l];
  const float* residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * maxN * C;
  const float* residual2 = a.residual2 + l * maxN * C;
  // q|k|v and gate|up: layer l's, or (mixed precision) widened from their 16-bit copies.
  const float* q = saved_fp32(a.qkv, a.qkv_16, l, N, w.qkv);
  const float* k = q + N * w.q;
  const float* v = k + N * w.kv;
  const float* gate = saved_fp32(a.fch, a.fch_16, l, N, w.mlp_in);
  const float* up = gate + N * w.mlp;
  float* dq = a.dqkv;
  float* dk = dq + N * w.q;
  float* dv = dk + N * w.kv;
  float* dgate = a.dfch;
  float* dup = dgate + N * w.mlp;
  auto linear = [&](LoraTarget t, float* dx, const float* dout, SavedInput x) {
    linear_backward(block_linear(l, t, p, g, &a, T), ctx, dx, dout, x, lora_h(a, l, t), (int)N);
  };
  const RopeTables rope = rope_tables();

  // MLP branch: dresidual is d(block output) = d(mlp output).
  zero(a.dfch_gelu, N * w.mlp);
  linear(LoraTarget::mlp_down, a.dfch_gelu, a.dresidual,
         saved_input(a, a.fch_gelu, a.fch_gelu_16, l, w.mlp));
  zero(a.dfch, N * w.mlp_in);
  backend_.swiglu_backward(dgate, dup, gate, up, a.dfch_gelu, N * w.mlp);
  zero(a.dln, N * C);
  const SavedInput ln2 = saved_input(a, a.ln2, a.ln2_16, l, C);
  linear(LoraTarget::mlp_gate, a.dln, dgate, ln2);
  linear(LoraTarget::mlp_up, a.dln, dup, ln2);
  allreduce_tp(a.dln, N * C);  // column-parallel gate and up: sum the input's gradient
  backend_.rmsnorm_backward(a.dresidual, gw.ln2_w, a.dln, residual2, pw.ln2_w,
                            a.ln2_rstd + l * maxN, (int)N, C);

  // Attention branch: dresidual is now d(residual2).
  zero(a.datty, N * w.q);
  linear(LoraTarget::attn_out, a.datty, a.dresidual, saved_input(a, a.atty, a.atty_16, l, w.q));
  zero(a.dqkv, N * w.qkv);
  backend_.gqa_attention_backward(dq, dk, dv, a.datty, q, k, v, a.att + l * attention_saved_stride(),
                                  B, T, NH, NKV, hs, (int)w.q, (int)w.kv);
  backend_.rope_backward(dq, rope.cos, rope.sin, B, T, NH, hs, (int)w.q);
  backend_.rope_backward(dk, rope.cos, rope.sin, B, T, NKV, hs, (int)w.kv);
  zero(a.dln, N * C);
  const SavedInput ln1 = saved_input(a, a.ln1, a.ln1_16, l, C);
  linear(LoraTarget::q, a.dln, dq, ln1);
  linear(LoraTarget::k, a.dln, dk, ln1);
  linear(LoraTarget::v, a.dln, dv, ln1);
  allreduce_tp(a.dln, N * C);  // column-parallel q, k, v: sum the input's gradient
  backend_.rmsnorm_backward(a.dresidual, gw.ln1_w, a.dln, residual, pw.ln1_w,
                            a.ln1_rstd + l * maxN, (int)N, C);
}

}  // namespace tessera
