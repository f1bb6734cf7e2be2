// GPTModel's forward and backward passes (see gpt_model.h); construction is in gpt_model_setup.cpp.
#include "framework/model/gpt_model.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <limits>
#include <string>

#include "framework/model/gpt_model_internal.h"
#include "base/error.h"
#include "base/rng.h"
#include "parallel/collectives.h"

namespace tessera {

LinearContext GPTModel::linear_context() const {
  const Activations& shared = slots_[0];  // the scratch is the same in every slot
  const Widths w = widths();
  const int64_t widest_out = std::max(w.qkv, w.mlp_in);  // of a block layer
  return LinearContext{backend_, options_.precision, tp_.size, tp_.comm, shared.scratch16,
                       mixed_ ? shared.maxN * widest_out : 0, shared.scratch, shared.scratch2,
                       shared.lora_dh};
}

// pass (with T): the activation slot of a forward or backward pass, for LoRA dropout.
LinearLayer GPTModel::block_linear(int l, LoraTarget t, const ParamPtrs& p, const ParamPtrs& g,
                               const Activations* pass, int T) const {
  const int C = config_.n_embd;
  const Widths wd = widths();
  const int Q = (int)wd.q, KV = (int)wd.kv, Ct = (int)wd.q, Ft = (int)wd.mlp;
  const auto &w = p.blocks[l], &d = g.blocks[l];
  LinearLayer L;
  switch (t) {
    case LoraTarget::qkv:
      L = {TpSplit::column, C, (int)wd.qkv, w.qkv_w, w.qkv_b, nullptr, d.qkv_w, d.qkv_b, {}};
      break;
    case LoraTarget::attn_out:
      L = {TpSplit::row, Ct, C, w.proj_w, w.proj_b, nullptr, d.proj_w, d.proj_b, {}};
      break;
    case LoraTarget::mlp_up:
      L = {TpSplit::column, C, Ft, w.up_w, w.up_b, nullptr, d.up_w, d.up_b, {}};
      break;
    case LoraTarget::mlp_down:
      L = {TpSplit::row, Ft, C, w.down_w, w.down_b, nullptr, d.down_w, d.down_b, {}};
      break;
    case LoraTarget::q:
      L = {TpSplit::column, C, Q, w.q_w, nullptr, nullptr, d.q_w, nullptr, {}};
      break;
    case LoraTarget::k:
      L = {TpSplit::column, C, KV, w.k_w, nullptr, nullptr, d.k_w, nullptr, {}};
      break;
    case LoraTarget::v:
      L = {TpSplit::column, C, KV, w.v_w, nullptr, nullptr, d.v_w, nullptr, {}};
      break;
    case LoraTarget::mlp_gate:
      L = {TpSplit::column, C, Ft, w.gate_w, nullptr, nullptr, d.gate_w, nullptr, {}};
      break;
  }
  if (mixed_) L.weight16 = params16_.get() + (L.weight - params_.get());
  const int ia = lora_index_[l][(int)t];
  if (ia >= 0) {
    const auto& adapters = lora_table_.params();
    const int64_t oa = adapters[ia].offset, ob = adapters[ia + 1].offset;
    L.lora = {lora_params_.get() + oa, lora_params_.get() + ob, lora_grads_.get() + oa,
              lora_grads_.get() + ob, options_.lora.rank,
              options_.lora.alpha / (float)options_.lora.rank, {}};
    if (pass && pass->dropout.on && options_.lora.dropout > 0) {
      const bool row = L.split == TpSplit::row;  // then the input is this rank's columns
      const int global_layer = stage_.first_layer + l;
      const uint64_t seed = fnv1a64("h." + std::to_string(global_layer) + "." +
                                    std::to_string((int)t) + " lora dropout") ^
                            (options_.seed * 0x9E3779B97F4A7C15ull) ^
                            (pass->dropout.step * 0xD1B54A32D192ED03ull);
      L.lora.dropout = {options_.lora.dropout, seed, pass->dropout.first_sample, T,
                        row ? (int64_t)tp_.rank * L.in : 0,
                        row ? (int64_t)L.in * tp_.size : (int64_t)L.in};
    }
  }
  return L;
}

// The LM head: logits = lnf @ W^T with W the token embedding (tied) or llama's lm_head,
// column-parallel over the vocabulary, no bias.
LinearLayer GPTModel::lm_head(const ParamPtrs& p, const ParamPtrs& g) const {
  const bool own = lm_head_index_ >= 0;
  LinearLayer L{TpSplit::column, config_.n_embd, local_vocab_, own ? p.lm_head : p.wte, nullptr,
                nullptr, own ? g.lm_head : g.wte, nullptr, {}};
  if (mixed_) L.weight16 = params16_.get() + (L.weight - params_.get());
  return L;
}

// x = its 16-bit rounding, which x16 keeps for the backward pass.
void GPTModel::keep_16bit(float* x, uint16_t* x16, int64_t n) const {
  backend_.round_to_16bit(options_.precision, x16, x, n);
  backend_.widen_16bit(options_.precision, x, x16, n);
}

// Layer l's copy of an activation saved per layer: x32's own (fp32), or x16's widened into
// x32's one-layer buffer (mixed precision).
const float* GPTModel::saved_fp32(float* x32, const uint16_t* x16, int l, int64_t N,
                              int64_t width) const {
  const int64_t maxN = slots_[0].maxN;
  if (!mixed_) return x32 + l * maxN * width;
  backend_.widen_16bit(options_.precision, x32, x16 + l * maxN * width, N * width);
  return x32;
}

float* GPTModel::lora_h(Activations& a, int l, LoraTarget t) const {
  return a.lora_h + ((int64_t)l * kLoraTargets + (int)t) * a.maxN * options_.lora.rank;
}

void GPTModel::allreduce_tp(float* x, int64_t n) const {
  if (tp_.size > 1) tp_.comm->all_reduce(x, n);
}

int32_t GPTModel::argmax_token(int64_t row) const {
  check(stage_.is_last(), "argmax_token: only the last pipeline stage has logits");
  const int n = std::max(0, std::min(local_vocab_, config_.vocab_size - vocab_start()));
  std::vector<float> host;
  const float* x = backend_.host_view(slots_[0].logits + row * local_vocab_, n, host);
  float best = -std::numeric_limits<float>::infinity();
  int32_t index = INT32_MAX;
  for (int i = 0; i < n; i++)
    if (x[i] > best || index == INT32_MAX) best = x[i], index = vocab_start() + i;
  if (tp_.size == 1) return index;
  // The largest value over the group, then the lowest index holding it (a max-loc).
  const float top = all_reduce_value(*tp_.comm, best, ReduceOp::max);
  return all_reduce_value(*tp_.comm, best == top ? index : INT32_MAX, ReduceOp::min);
}

// Vocabulary-parallel softmax + cross-entropy (Megatron's split, merged like flash
// attention's softmax): each rank holds the logits of columns vocab_start() .. + Vl
// (columns >= V are padding) and sums its own part of every row's softmax, {max, sum of
// exp, target logit if it owns the target}; one all-gather of those [N, 3] gives every
// rank all parts, which it merges in rank order (the same losses on every rank). With
// `backward`, the logits become their gradient dloss * (softmax - onehot) in place.
void GPTModel::vocab_parallel_crossentropy(Activations& a, const int32_t* targets, int N,
                                           float dloss, bool backward) {
  const int Vl = local_vocab_, start = vocab_start();
  const int n_real = std::max(0, std::min(Vl, config_.vocab_size - start));
  float* mine = a.softmax_stats + (int64_t)tp_.rank * N * 3;
  backend_.crossentropy_shard_stats(mine, a.logits, targets, N, Vl, n_real, start);
  tp_.comm->all_gather(mine, a.softmax_stats, (int64_t)N * 3);  // in place
  backend_.crossentropy_shard_finish(a.losses, backward ? a.logits : nullptr, a.logits,
                                     a.softmax_stats, tp_.size, targets, dloss, N, Vl, n_real,
                                     start);
}

const float* GPTModel::logits() const {
  check(stage_.is_last(), "logits: only the last pipeline stage has logits");
  return slots_[0].logits;
}

namespace {
void check_tokens(const int32_t* tokens, int64_t n, int V, const char* what) {
  for (int64_t i = 0; i < n; i++)
    check(tokens[i] >= 0 && tokens[i] < V, std::string(what) + " token " +
                                               std::to_string(tokens[i]) + " at position " +
                                               std::to_string(i) + " is outside [0, " +
                                               std::to_string(V) + ")");
}

double mean_of(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s / (double)n;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

void GPTModel::check_shape(int slot, int B, int T) const {
  check(slot >= 0 && slot < (int)slots_.size(),
        "activation slot " + std::to_string(slot) + " of " + std::to_string(slots_.size()));
  check(B >= 1 && B <= max_batch_, "micro-batch " + std::to_string(B) + " exceeds the arena's " +
                                       std::to_string(max_batch_));
  check(T >= 1 && T <= config_.seq_len,
        "sequence length " + std::to_string(T) + " exceeds model.seq_len");
}

void GPTModel::stage_forward(int slot, const int32_t* inputs, const float* x_in, int B, int T) {
  check_shape(slot, B, T);
  const int C = config_.n_embd, Vl = local_vocab_;
  const bool tp = tp_.size > 1;
  const int64_t N = (int64_t)B * T;
  Activations& a = slots_[slot];
  const ParamPtrs p = param_ptrs(params_.get());

  if (stage_.is_first()) check_tokens(inputs, N, config_.vocab_size, "input");
  if (!stage_.is_first()) {
    backend_.copy(a.encoded, x_in, N * C);
  } else if (!tp && p.wpe) {
    backend_.encoder_forward(a.encoded, inputs, p.wte, p.wpe, B, T, C);
  } else {
    // Vocabulary-parallel embedding (also llama's lookup, which has no wpe): each rank
    // embeds the tokens of its rows, the others are 0 here, and the all-reduce assembles
    // the lookup (one non-zero term per position: exact).
    backend_.encoder_forward_vocab_shard(a.encoded, inputs, p.wte, p.wpe, B, T, C, vocab_start(),
                                         Vl);
    allreduce_tp(a.encoded, N * C);
  }
  refresh_weights16();
  const ParamPtrs g = param_ptrs(grads_.get());
  const LinearContext ctx = linear_context();
  for (int l = 0; l < stage_.num_layers; l++) {  // l: this stage's layer index
    if (config_.llama())
      llama_block_forward(a, l, p, g, B, T);
    else
      gpt2_block_forward(a, l, p, g, B, T);
  }
  if (!stage_.is_last()) return;
  if (config_.llama())
    backend_.rmsnorm_forward(a.lnf, a.lnf_rstd, stage_output_of(a), p.lnf_w, (int)N, C,
                             config_.norm_eps);
  else
    backend_.layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, stage_output_of(a), p.lnf_w,
                               p.lnf_b, (int)N, C);
  linear_forward(lm_head(p, g), ctx, a.logits, a.lnf, mixed_ ? a.lnf_16 : nullptr, nullptr,
                 (int)N);
}

// Block l of GPT-2: x -> LayerNorm -> qkv -> attention -> proj -> + x -> LayerNorm -> up ->
// GELU -> down -> + x.
void GPTModel::gpt2_block_forward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B,
                              int T) {
  const int C = config_.n_embd, NH = config_.n_head / tp_.size;
  const int Ct = C / tp_.size, Ft = config_.mlp_width() / tp_.size;
  const int64_t N = (int64_t)B * T, maxN = a.maxN;
  const int64_t att_stride = attention_saved_stride();
  const LinearContext ctx = linear_context();
  // The linear layers' fp32 inputs: layer l's own (fp32), or one transient buffer that is
  // rounded into layer l's 16-bit one (mixed precision).
  const int64_t per_layer = mixed_ ? 0 : 1;
  auto in16 = [&](uint16_t* base, int l, int64_t width) {
    return mixed_ ? base + l * maxN * width : nullptr;
  };
  const float* residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * maxN * C;
  float* ln1 = a.ln1 + per_layer * l * maxN * C;
  float* qkv = a.qkv + per_layer * l * maxN * 3 * Ct;
  float* atty = a.atty + per_layer * l * maxN * Ct;
  float* residual2 = a.residual2 + l * maxN * C;
  float* ln2 = a.ln2 + per_layer * l * maxN * C;
  float* fch = a.fch + per_layer * l * maxN * Ft;
  float* fch_gelu = a.fch_gelu + per_layer * l * maxN * Ft;
  auto linear = [&](LoraTarget t, float* out, const float* x, uint16_t* x16) {
    linear_forward(block_linear(l, t, p, g, &a, T), ctx, out, x, x16, lora_h(a, l, t), (int)N);
  };
  backend_.layernorm_forward(ln1, a.ln1_mean + l * maxN, a.ln1_rstd + l * maxN, residual,
                             p.blocks[l].ln1_w, p.blocks[l].ln1_b, (int)N, C);
  linear(LoraTarget::qkv, qkv, ln1, in16(a.ln1_16, l, C));
  if (mixed_) keep_16bit(qkv, in16(a.qkv_16, l, 3 * Ct), N * 3 * Ct);
  float* saved = a.att + l * att_stride;  // probabilities, or log-sum-exps
  const AttentionKind kind = attention_for(B, T);
  if (kind == AttentionKind::full)
    backend_.attention_forward(atty, saved, qkv, B, T, Ct, NH);
  else if (kind == AttentionKind::flash)
    backend_.flash_attention_forward(atty, saved, qkv, B, T, Ct, NH);
  else
    backend_.cudnn_attention_forward(atty, saved, qkv, B, T, Ct, NH);
  linear(LoraTarget::attn_out, a.branch, atty, in16(a.atty_16, l, Ct));
  backend_.residual_forward(residual2, residual, a.branch, N * C);
  backend_.layernorm_forward(ln2, a.ln2_mean + l * maxN, a.ln2_rstd + l * maxN, residual2,
                             p.blocks[l].ln2_w, p.blocks[l].ln2_b, (int)N, C);
  linear(LoraTarget::mlp_up, fch, ln2, in16(a.ln2_16, l, C));
  if (mixed_) keep_16bit(fch, in16(a.fch_16, l, Ft), N * Ft);
  backend_.gelu_forward(fch_gelu, fch, N * Ft);
  linear(LoraTarget::mlp_down, a.branch, fch_gelu, in16(a.fch_gelu_16, l, Ft));
  backend_.residual_forward(a.residual3 + l * maxN * C, residual2, a.branch, N * C);
}

int GPTModel::activation_slots() const { return (int)slots_.size(); }

const float* GPTModel::stage_output(int slot) const {
  check(slot >= 0 && slot < (int)slots_.size(), "activation slot out of range");
  return stage_output_of(slots_[slot]);
}

const float* GPTModel::stage_output_of(const Activations& a) const {
  return a.residual3 + (int64_t)(stage_.num_layers - 1) * a.maxN * config_.n_embd;
}


float GPTModel::stage_loss(int slot, const int32_t* targets, int B, int T, float grad_scale,
                       bool backward) {
  check(stage_.is_last(), "stage_loss: only the last pipeline stage computes the loss");
  check_shape(slot, B, T);
  const int64_t N = (int64_t)B * T;
  check_tokens(targets, N, config_.vocab_size, "target");
  Activations& a = slots_[slot];
  // The fused kernel turns the logits into their gradient in place.
  const float dloss = backward ? grad_scale / (float)N : 0.0f;
  if (tp_.size == 1)
    backend_.crossentropy_forward_backward(a.losses, backward ? a.logits : (float*)nullptr,
                                           a.logits, targets, dloss, (int)N,
                                           config_.vocab_size, config_.padded_vocab_size);
  else
    vocab_parallel_crossentropy(a, targets, (int)N, dloss, backward);
  std::vector<float> host;
  return (float)mean_of(backend_.host_view(a.losses, N, host), N);
}

float GPTModel::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  check(stage_.size == 1, "forward: under pipeline parallelism use the stage_* passes");
  stage_forward(0, inputs, nullptr, B, T);
  if (!targets) return std::numeric_limits<float>::quiet_NaN();
  return stage_loss(0, targets, B, T, 0.0f, false);
}

float GPTModel::forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                             float grad_scale) {
  check(stage_.size == 1, "forward_backward: under pipeline parallelism use the stage_* passes");
  const auto t0 = std::chrono::steady_clock::now();
  stage_forward(0, inputs, nullptr, B, T);
  const float loss = stage_loss(0, targets, B, T, grad_scale, true);
  times_.forward_ms = ms_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  stage_backward(0, inputs, nullptr, nullptr, B, T);
  times_.backward_ms = ms_since(t1);
  return loss;
}

// Announces parameters first .. first + count - 1 of table() to the grad-ready hook, last
// one first.
void GPTModel::announce_ready(int first, int count) const {
  if (grad_ready_)
    for (int i = first + count - 1; i >= first; i--) grad_ready_(i);
}

// A linear layer's input as stage_forward saved it: layer l's fp32 copy, or its 16-bit one.
SavedInput GPTModel::saved_input(const Activations& a, const float* x32, const uint16_t* x16, int l,
                             int64_t width) const {
  return mixed_ ? SavedInput{nullptr, x16 + l * a.maxN * width}
                : SavedInput{x32 + l * a.maxN * width, nullptr};
}

void GPTModel::stage_backward(int slot, const int32_t* inputs, const float* dx_out, float* dx_in,
                          int B, int T) {
  check_shape(slot, B, T);
  const int C = config_.n_embd;
  const int64_t N = (int64_t)B * T;
  Activations& a = slots_[slot];
  const ParamPtrs p = param_ptrs(params_.get());
  const ParamPtrs g = param_ptrs(grads_.get());  // all null under LoRA: the base is frozen
  // dresidual collects the gradient of the residual stream; every branch adds into it
  // (the residual add's backward is identity).
  if (stage_.is_last())
    head_backward(a, p, g, N);
  else
    backend_.copy(a.dresidual, dx_out, N * C);
  for (int l = stage_.num_layers - 1; l >= 0; l--) {
    if (config_.llama())
      llama_block_backward(a, l, p, g, B, T);
    else
      block_backward(a, l, p, g, B, T);
    announce_block_ready(l);
  }
  if (!stage_.is_first()) {
    backend_.copy(dx_in, a.dresidual, N * C);
    if (wte_index() >= 0) announce_ready(wte_index(), 1);  // the LM head's copy of wte
    return;
  }
  if (lora_) return;  // the embeddings are frozen
  embedding_backward(a, g, inputs, B, T);
  // wte (on one stage: the LM head and the embedding both added to it) and gpt2's wpe
  announce_ready(0, block0_index_);
}

// The LM head (tied to wte) and the final LayerNorm, from the dlogits stage_loss left.
void GPTModel::head_backward(Activations& a, const ParamPtrs& p, const ParamPtrs& g, int64_t N) {
  const int C = config_.n_embd;
  backend_.zero(a.dln, N * C);
  linear_backward(lm_head(p, g), linear_context(), a.dln, a.logits,
                  saved_input(a, a.lnf, a.lnf_16, 0, C), nullptr, (int)N);
  allreduce_tp(a.dln, N * C);  // the LM head is column-parallel over the vocabulary
  backend_.zero(a.dresidual, N * C);
  if (config_.llama())
    backend_.rmsnorm_backward(a.dresidual, g.lnf_w, a.dln, stage_output_of(a), p.lnf_w,
                              a.lnf_rstd, (int)N, C);
  else
    backend_.layernorm_backward(a.dresidual, g.lnf_w, g.lnf_b, a.dln, stage_output_of(a),
                                p.lnf_w, a.lnf_mean, a.lnf_rstd, (int)N, C);
  // The final norm's tensors and llama's own LM head (both added after the blocks).
  if (!lora_) announce_ready(lnf_index_, (int)table_.params().size() - lnf_index_);
}

// Block l: a.dresidual holds d(block output) on entry and d(block input) on return.
void GPTModel::block_backward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B,
                          int T) {
  const int C = config_.n_embd, NH = config_.n_head / tp_.size;
  const int Ct = C / tp_.size, Ft = config_.mlp_width() / tp_.size;
  const int64_t N = (int64_t)B * T, maxN = a.maxN;
  const int64_t att_stride = attention_saved_stride();
  const LinearContext ctx = linear_context();
  auto zero = [this](float* x, int64_t n) { backend_.zero(x, n); };
  const auto& w = p.blocks[l];
  const auto& gw = g.blocks[l];
  const float* residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * maxN * C;
  const float* residual2 = a.residual2 + l * maxN * C;
  // qkv and fch: layer l's, or (mixed precision) widened from their 16-bit copies.
  const float* qkv = saved_fp32(a.qkv, a.qkv_16, l, N, 3 * Ct);
  const float* fch = saved_fp32(a.fch, a.fch_16, l, N, Ft);
  auto linear = [&](LoraTarget t, float* dx, const float* dout, SavedInput x) {
    linear_backward(block_linear(l, t, p, g, &a, T), ctx, dx, dout, x, lora_h(a, l, t), (int)N);
  };

  // MLP branch: dresidual is d(block output) = d(mlp output).
  zero(a.dfch_gelu, N * Ft);
  linear(LoraTarget::mlp_down, a.dfch_gelu, a.dresidual, saved_input(a, a.fch_gelu, a.fch_gelu_16, l, Ft));
  zero(a.dfch, N * Ft);
  backend_.gelu_backward(a.dfch, fch, a.dfch_gelu, N * Ft);
  zero(a.dln, N * C);
  linear(LoraTarget::mlp_up, a.dln, a.dfch, saved_input(a, a.ln2, a.ln2_16, l, C));
  allreduce_tp(a.dln, N * C);  // column-parallel up: sum the input's gradient
  backend_.layernorm_backward(a.dresidual, gw.ln2_w, gw.ln2_b, a.dln, residual2, w.ln2_w,
                              a.ln2_mean + l * maxN, a.ln2_rstd + l * maxN, (int)N, C);

  // Attention branch: dresidual is now d(residual2).
  zero(a.datty, N * Ct);
  linear(LoraTarget::attn_out, a.datty, a.dresidual, saved_input(a, a.atty, a.atty_16, l, Ct));
  zero(a.dqkv, N * 3 * Ct);
  const float* saved = a.att + l * att_stride;
  const AttentionKind kind = attention_for(B, T);
  if (kind == AttentionKind::full) {
    backend_.attention_backward(a.dqkv, a.datty, qkv, saved, B, T, Ct, NH);
  } else {
    // Flash and cuDNN need the forward's output: in mixed precision widened from its
    // 16-bit copy.
    const float* atty = saved_fp32(a.atty, a.atty_16, l, N, Ct);
    if (kind == AttentionKind::flash)
      backend_.flash_attention_backward(a.dqkv, a.datty, qkv, atty, saved, B, T, Ct, NH);
    else
      backend_.cudnn_attention_backward(a.dqkv, a.datty, qkv, atty, saved, B, T, Ct, NH);
  }
  zero(a.dln, N * C);
  linear(LoraTarget::qkv, a.dln, a.dqkv, saved_input(a, a.ln1, a.ln1_16, l, C));
  allreduce_tp(a.dln, N * C);  // column-parallel qkv: sum the input's gradient
  backend_.layernorm_backward(a.dresidual, gw.ln1_w, gw.ln1_b, a.dln, residual, w.ln1_w,
                              a.ln1_mean + l * maxN, a.ln1_rstd + l * maxN, (int)N, C);
}

// Block l's gradients are final: its tensors, or under LoRA its adapters (A and B of each
// target, consecutive in the table).
void GPTModel::announce_block_ready(int l) const {
  if (!lora_) {
    announce_ready(block0_index_ + params_per_block() * l, params_per_block());
    return;
  }
  int first = INT_MAX, count = 0;
  for (int ia : lora_index_[l])
    if (ia >= 0) first = std::min(first, ia), count += 2;
  if (count > 0) announce_ready(first, count);
}

// The token and position embeddings' gradients (first stage) from a.dresidual.
void GPTModel::embedding_backward(Activations& a, const ParamPtrs& g, const int32_t* inputs, int B,
                              int T) {
  const int C = config_.n_embd, Vl = local_vocab_;
  if (tp_.size == 1 && g.wpe) {
    backend_.encoder_backward(g.wte, g.wpe, a.dresidual, inputs, B, T, C);
    return;
  }
  // Vocabulary-parallel embedding: this rank's rows only; wpe (replicated, gpt2) as usual.
  backend_.encoder_backward_vocab_shard(g.wte, g.wpe, a.dresidual, inputs, B, T, C, vocab_start(),
                                        Vl);
}

}  // namespace tessera
