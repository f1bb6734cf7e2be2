// GPTModel's construction and parameters: the parameter tables (base model and LoRA
// adapters, each rank its tp slices of its stage's layers), the flat buffers, the
// activation arena, initialisation, the 16-bit weight copy, and what works on whole
// tables (gradient norm, gathering, merging adapters). The passes are in gpt_model.cpp.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "framework/model/gpt_model.h"
#include "base/error.h"
#include "base/rng.h"
#include "framework/model/gpt_model_internal.h"
#include "framework/optim/adamw.h"
#include "kernels/ops.h"
#include "parallel/collectives.h"

namespace tessera {

GPTConfig GPTConfig::from_recipe(const ModelConfig& m) {
  GPTConfig c;
  c.n_layer = m.n_layer;
  c.n_head = m.n_head;
  c.n_embd = m.n_embd;
  c.vocab_size = m.vocab_size;
  c.padded_vocab_size = (m.vocab_size + m.vocab_pad_to - 1) / m.vocab_pad_to * m.vocab_pad_to;
  c.seq_len = m.seq_len;
  c.family = m.family == "llama" ? Family::llama : Family::gpt2;
  c.n_kv_head = m.n_kv_head;
  c.intermediate_size = m.intermediate_size;
  c.rope_theta = m.rope_theta;
  c.norm_eps = (float)m.norm_eps;
  c.tie_embeddings = m.tie_embeddings;
  return c;
}

int GPTConfig::mlp_width() const {
  if (!llama()) return 4 * n_embd;
  if (intermediate_size > 0) return intermediate_size;
  const int hidden = 2 * (4 * n_embd) / 3;  // Llama's rule (multiple_of = 256)
  return (hidden + 255) / 256 * 256;
}

ModelOptions ModelOptions::from_recipe(const Recipe& r) {
  ModelOptions o;
  o.precision = r.train.precision;
  o.stochastic_rounding = r.train.stochastic_rounding;
  o.seed = r.train.seed;
  o.attention = r.kernels.attention;
  if (r.lora.rank > 0) {
    o.lora.rank = r.lora.rank;
    o.lora.alpha = (float)r.lora.alpha;
    o.lora.dropout = (float)r.lora.dropout;
    // lora_targets() has checked every name against the family's layers.
    const Family family = r.model.family == "llama" ? Family::llama : Family::gpt2;
    for (const std::string& t : lora_targets(r))
      for (LoraTarget target : block_linears(family))
        if (t == lora_target_name(target)) o.lora.targets[(int)target] = true;
  }
  return o;
}

double GPTConfig::training_flops_per_token(int T) const {
  const double L = n_layer, C = n_embd, Vp = padded_vocab_size;
  const double Ckv = (double)kv_heads() * head_size(), F = mlp_width();
  const double per_layer = llama() ? 2 * C * C + 2 * C * Ckv + 3 * C * F : 12.0 * C * C;
  return 3.0 * (2.0 * (L * per_layer + C * Vp) + L * 4.0 * T * C);
}

GPTModel::GPTModel(const GPTConfig& cfg, int max_batch, TensorParallel tp, int flat_multiple,
           PipelineStage stage, int activation_slots, ModelOptions options)
    : config_(cfg),
      options_(options),
      backend_(options.backend ? *options.backend : kernels::cpu_backend()),
      mixed_(options.precision != kernels::Dtype::fp32),
      lora_(options.lora.rank > 0),
      max_batch_(max_batch),
      tp_(tp),
      stage_(stage) {
  if (stage_.num_layers < 0) stage_.num_layers = cfg.n_layer - stage_.first_layer;
  check_layout(activation_slots);
  attention_ = choose_attention();  // before the arena: it sizes the saved attention
  local_vocab_ = (int)((cfg.padded_vocab_size + tp.size - 1) / tp.size);
  if (cfg.llama())
    lay_out_llama_parameters();
  else
    lay_out_parameters();
  lay_out_lora();
  try {
    allocate_buffers(flat_multiple);
    carve_activation_arena(max_batch, activation_slots);
  } catch (const Error& e) {  // out of memory, most likely: say what the model asked for
    throw Error(std::string(e.what()) + "\n" + memory_plan(max_batch, activation_slots));
  }
  if (cfg.llama()) {  // the rotary embedding's angles, once (computed on the host)
    const int64_t n = (int64_t)cfg.seq_len * (cfg.head_size() / 2);
    std::vector<float> table(2 * (size_t)n);
    kernels::rope_table(table.data(), table.data() + n, cfg.seq_len, cfg.head_size(),
                        cfg.rope_theta);
    rope_ = backend_.allocate<float>(2 * n);
    backend_.to_device(rope_.data(), table.data(), 2 * n);
  }
}

void GPTModel::check_layout(int activation_slots) const {
  const GPTConfig& cfg = config_;
  const TensorParallel& tp = tp_;
  check(!options_.stochastic_rounding || options_.precision == kernels::Dtype::bf16,
        "stochastic rounding is for bf16");
  check(cfg.n_embd % cfg.n_head == 0, "model.n_embd must be divisible by model.n_head");
  check(cfg.padded_vocab_size >= cfg.vocab_size, "padded vocabulary smaller than vocabulary");
  check(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "bad tensor-parallel rank/size");
  check(tp.size == 1 || tp.comm != nullptr, "tensor parallelism needs a communicator");
  check(stage_.size >= 1 && stage_.rank >= 0 && stage_.rank < stage_.size &&
            stage_.first_layer >= 0 && stage_.num_layers >= 1 &&
            stage_.first_layer + stage_.num_layers <= cfg.n_layer,
        "bad pipeline stage");
  check(stage_.size == 1 || stage_.comm != nullptr, "pipeline parallelism needs a communicator");
  check(activation_slots >= 1, "at least one activation slot");
  // The layout's own checks (parallel/mesh.h) are the source of truth; these only guard
  // direct users of the class.
  check(cfg.n_head % tp.size == 0, "model.n_head must be divisible by parallel.tp");
  check(cfg.mlp_width() % tp.size == 0, "the MLP width must be divisible by parallel.tp");
  const bool gpt2_targets = options_.lora.on(LoraTarget::qkv);
  const bool llama_targets = options_.lora.on(LoraTarget::q) || options_.lora.on(LoraTarget::k) ||
                             options_.lora.on(LoraTarget::v) ||
                             options_.lora.on(LoraTarget::mlp_gate);
  if (!cfg.llama()) {
    check(!llama_targets, "lora.targets: q, k, v and mlp_gate are llama layers (gpt2 has qkv)");
    return;
  }
  check(!gpt2_targets, "lora.targets: qkv is gpt2's fused layer (llama has q, k, v)");
  check(backend_.has_llama_ops(), std::string("model.family llama: the ") +
                                      kernels::to_string(backend_.device()) +
                                      " backend has no kernels for it; train it on the cpu");
  check(cfg.n_head % cfg.kv_heads() == 0, "model.n_kv_head must divide model.n_head");
  check(cfg.kv_heads() % tp.size == 0, "model.n_kv_head must be divisible by parallel.tp");
  check(cfg.head_size() % 2 == 0, "llama: the head size must be even (rotary pairs)");
}

GPTModel::AttentionKind GPTModel::choose_attention() {
  const int Ct = config_.n_embd / tp_.size, NH = config_.n_head / tp_.size;
  const bool bf16_gpt2 = !config_.llama() && options_.precision == kernels::Dtype::bf16;
  const bool flash = bf16_gpt2 && backend_.flash_attention_supported(Ct, NH);
  if (options_.attention != AttentionEngine::cudnn)
    return flash ? AttentionKind::flash : AttentionKind::full;
  check(bf16_gpt2, std::string("kernels.attention cudnn is for model.family gpt2 in "
                               "train.precision bf16, not ") +
                       (config_.llama() ? "llama" : "gpt2") + " in " +
                       kernels::dtype_name(options_.precision));
  // Our flash kernel stands in for cuDNN on any shape cuDNN cannot build, in the same
  // saved log-sum-exps, so cuDNN is offered only where that kernel runs.
  check(flash, "kernels.attention cudnn: our flash attention kernel, which cuDNN attention "
               "falls back to, does not run head size " + std::to_string(config_.head_size()) +
                   " (model.n_embd " + std::to_string(config_.n_embd) + " / model.n_head " +
                   std::to_string(config_.n_head) + ") on the " +
                   kernels::to_string(backend_.device()) +
                   " backend: it runs head sizes 64 and 128 on GPUs; set kernels.attention own");
  return cudnn_or_flash(max_batch_, config_.seq_len);
}

GPTModel::AttentionKind GPTModel::cudnn_or_flash(int B, int T) {
  const int Ct = config_.n_embd / tp_.size, NH = config_.n_head / tp_.size;
  const std::string why = backend_.cudnn_attention_prepare(B, T, Ct, NH);
  const AttentionKind kind = why.empty() ? AttentionKind::cudnn : AttentionKind::flash;
  cudnn_shapes_[{B, T}] = kind;
  if (kind == AttentionKind::flash) {
    const std::string which = B == max_batch_ ? "the attention runs"
                                              : "micro-batches of B=" + std::to_string(B) +
                                                    " run";
    notice("kernels.attention cudnn: " + why + "; " + which + " on our flash kernel");
  }
  return kind;
}

GPTModel::AttentionKind GPTModel::attention_for(int B, int T) {
  if (attention_ != AttentionKind::cudnn) return attention_;
  // cuDNN's graphs are planned for the training length only: a plan per length would cost
  // a graph build per token of a sample. Shorter sequences (sampling) take our flash kernel.
  if (T != config_.seq_len) return AttentionKind::flash;
  const auto known = cudnn_shapes_.find({B, T});
  return known != cudnn_shapes_.end() ? known->second : cudnn_or_flash(B, T);
}

const char* GPTModel::attention_kind() const {
  switch (attention_) {
    case AttentionKind::flash: return "flash";
    case AttentionKind::cudnn: return "cudnn";
    case AttentionKind::full: break;
  }
  return "full";
}

void GPTModel::notice(const std::string& line) const {
  if (options_.print_notices) std::fprintf(stderr, "%s\n", line.c_str());
}

// Only this stage's parameters (this tp rank's slices), under their logical names; the
// last stage's wte is the LM head's copy of the first stage's (same name, same initial
// values).
void GPTModel::lay_out_parameters() {
  const int64_t C = config_.n_embd, Vp = config_.padded_vocab_size, L = stage_.num_layers;
  const float std_resid = 0.02f / std::sqrt(2.0f * (float)config_.n_layer);
  const bool decay = true, no_decay = false;
  const ShardSpec rows{0, 1, tp_.rank, tp_.size}, cols{1, 1, tp_.rank, tp_.size};
  const ShardSpec qkv_rows{0, 3, tp_.rank, tp_.size};
  if (stage_.is_first() || stage_.is_last()) {
    wte_index_ = table_.add("wte.weight", {Vp, C}, Init::Normal, 0.02f, no_decay, rows);
    table_.set_tied_copy(wte_index_, !stage_.is_first());
  }
  if (stage_.is_first())
    wpe_index_ = table_.add("wpe.weight", {config_.seq_len, C}, Init::Normal, 0.02f, no_decay);
  block0_index_ = (int)table_.params().size();
  for (int l = stage_.first_layer; l < stage_.first_layer + L; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    table_.add(h + "ln_1.weight", {C}, Init::Ones, 0, no_decay);
    table_.add(h + "ln_1.bias", {C}, Init::Zeros, 0, no_decay);
    table_.add(h + "attn.qkv.weight", {3 * C, C}, Init::Normal, 0.02f, decay, qkv_rows);
    table_.add(h + "attn.qkv.bias", {3 * C}, Init::Zeros, 0, no_decay, qkv_rows);
    table_.add(h + "attn.proj.weight", {C, C}, Init::Normal, std_resid, decay, cols);
    table_.add(h + "attn.proj.bias", {C}, Init::Zeros, 0, no_decay);
    table_.add(h + "ln_2.weight", {C}, Init::Ones, 0, no_decay);
    table_.add(h + "ln_2.bias", {C}, Init::Zeros, 0, no_decay);
    table_.add(h + "mlp.up.weight", {4 * C, C}, Init::Normal, 0.02f, decay, rows);
    table_.add(h + "mlp.up.bias", {4 * C}, Init::Zeros, 0, no_decay, rows);
    table_.add(h + "mlp.down.weight", {C, 4 * C}, Init::Normal, std_resid, decay, cols);
    table_.add(h + "mlp.down.bias", {C}, Init::Zeros, 0, no_decay);
  }
  if (stage_.is_last()) {
    lnf_index_ = table_.add("ln_f.weight", {C}, Init::Ones, 0, no_decay);
    table_.add("ln_f.bias", {C}, Init::Zeros, 0, no_decay);
  }
}

// LoRA adapters, A then B, split as linear.h says: A along the input of row-parallel
// layers, B along the output of column-parallel ones (q|k|v blocks for gpt2's qkv).
void GPTModel::lay_out_lora() {
  const int64_t C = config_.n_embd, L = stage_.num_layers, F = config_.mlp_width();
  const int64_t Ckv = (int64_t)config_.kv_heads() * config_.head_size();
  const int r = options_.lora.rank;
  const ShardSpec rows{0, 1, tp_.rank, tp_.size}, cols{1, 1, tp_.rank, tp_.size};
  const ShardSpec qkv_rows{0, 3, tp_.rank, tp_.size}, replicated{};
  struct AdapterShape {
    LoraTarget target;
    const char* name;
    int64_t in, out;
    ShardSpec a_split, b_split;
  };
  const std::vector<AdapterShape> adapters =
      config_.llama()
          ? std::vector<AdapterShape>{{LoraTarget::q, "attn.q", C, C, replicated, rows},
                                      {LoraTarget::k, "attn.k", C, Ckv, replicated, rows},
                                      {LoraTarget::v, "attn.v", C, Ckv, replicated, rows},
                                      {LoraTarget::attn_out, "attn.o", C, C, cols, replicated},
                                      {LoraTarget::mlp_gate, "mlp.gate", C, F, replicated, rows},
                                      {LoraTarget::mlp_up, "mlp.up", C, F, replicated, rows},
                                      {LoraTarget::mlp_down, "mlp.down", F, C, cols, replicated}}
          : std::vector<AdapterShape>{
                {LoraTarget::qkv, "attn.qkv", C, 3 * C, replicated, qkv_rows},
                {LoraTarget::attn_out, "attn.proj", C, C, cols, replicated},
                {LoraTarget::mlp_up, "mlp.up", C, F, replicated, rows},
                {LoraTarget::mlp_down, "mlp.down", F, C, cols, replicated}};
  const bool decay = true;
  std::array<int, kLoraTargets> none;
  none.fill(-1);
  lora_index_.assign(L, none);
  for (int l = 0; l < (lora_ ? L : 0); l++)
    for (const AdapterShape& ad : adapters) {
      if (!options_.lora.on(ad.target)) continue;
      const std::string h = "h." + std::to_string(stage_.first_layer + l) + "." + ad.name;
      lora_index_[l][(int)ad.target] =
          lora_table_.add(h + ".lora_a", {r, ad.in}, Init::Normal,
                          1.0f / std::sqrt((float)ad.in), decay, ad.a_split);
      lora_table_.add(h + ".lora_b", {ad.out, r}, Init::Zeros, 0, decay, ad.b_split);
    }
}

void GPTModel::allocate_buffers(int flat_multiple) {
  check(flat_multiple >= 1, "bad flat-buffer multiple");
  const int64_t unit = 16 * (int64_t)flat_multiple;
  flat_size_ = (table().total_numel() + unit - 1) / unit * unit;
  // The gradients: in options.grad_storage's memory if it gives some, else our own.
  check(!options_.grad_storage || backend_.computes_on_host(),
        "gradients in host memory given to a model that computes on the GPU");
  float* given = options_.grad_storage ? options_.grad_storage(flat_size_) : nullptr;
  auto& grads = lora_ ? lora_grads_ : grads_;  // the base has no gradients under LoRA
  grads = given ? kernels::Buffer<float>::wrap(given, flat_size_)
                : backend_.allocate<float>(flat_size_);
  if (lora_) {  // the trained buffers are the adapters'
    params_ = backend_.allocate<float>(table_.total_numel());
    lora_params_ = backend_.allocate<float>(flat_size_);
  } else {
    params_ = backend_.allocate<float>(flat_size_);
  }
  if (mixed_)
    params16_ = backend_.allocate<uint16_t>(lora_ ? table_.total_numel() : flat_size_);
}

// The activation arena's arrays and their sizes (elements), per slot and shared by the
// slots (the backward scratch); 16-bit arrays apart.
struct GPTModel::ArenaPlan {
  using Member = float* Activations::*;
  using Member16 = uint16_t* Activations::*;
  std::vector<std::pair<Member, int64_t>> per_slot, shared;
  std::vector<std::pair<Member16, int64_t>> per_slot16, shared16;
};

GPTModel::Widths GPTModel::widths() const {
  const int64_t hs = config_.head_size(), NH = config_.n_head / tp_.size;
  const int64_t NKV = config_.kv_heads() / tp_.size, Ft = config_.mlp_width() / tp_.size;
  if (!config_.llama()) return {3 * NH * hs, NH * hs, NH * hs, Ft, Ft};
  return {(NH + 2 * NKV) * hs, NH * hs, NKV * hs, 2 * Ft, Ft};
}

GPTModel::ArenaPlan GPTModel::activation_plan(int max_batch) const {
  // Per-rank widths (widths()): the block's q|k|v outputs, the attention's output Ct, the
  // MLP's pre-activation Fin and hidden width Ft; Vl = ceil(Vp / tp) vocabulary columns.
  const int64_t C = config_.n_embd, L = stage_.num_layers, T = config_.seq_len;
  const int64_t N = (int64_t)max_batch * T;
  const Widths w = widths();
  const int64_t Ct = w.q, Ft = w.mlp, Fin = w.mlp_in, QKV = w.qkv, Vl = local_vocab_;
  const int64_t means = config_.llama() ? 0 : 1;  // RMSNorm keeps no means
  const int64_t head = stage_.is_last() ? 1 : 0;  // the final LayerNorm and logits
  // The linear layers' fp32 inputs are kept per layer in fp32 runs, for one layer at a
  // time in mixed precision (which keeps them in 16 bits: h16 layers).
  const int64_t h32 = mixed_ ? 1 : L, h16 = mixed_ ? L : 0, m16 = mixed_ ? 1 : 0;
  // Widest output gradient of a block layer (the LM head's is rounded in chunks of rows)
  // and widest input of an adapted layer.
  const int64_t widest_out = std::max({QKV, Fin, C}), widest_in = std::max(C, Ft);
  const int64_t lora_rank = lora_ ? options_.lora.rank : 0;
  using A = Activations;
  ArenaPlan p;
  p.per_slot = {{&A::encoded, N * C},       {&A::ln1, h32 * N * C},
                {&A::ln1_mean, means * L * N}, {&A::ln1_rstd, L * N},
                {&A::qkv, h32 * N * QKV},   {&A::atty, h32 * N * Ct},
                {&A::att, L * attention_saved_stride()},
                {&A::residual2, L * N * C}, {&A::ln2, h32 * N * C},
                {&A::ln2_mean, means * L * N}, {&A::ln2_rstd, L * N},
                {&A::fch, h32 * N * Fin},   {&A::fch_gelu, h32 * N * Ft},
                {&A::residual3, L * N * C}, {&A::lnf, head * N * C},
                {&A::lnf_mean, means * head * N}, {&A::lnf_rstd, head * N},
                {&A::logits, head * N * Vl}, {&A::losses, head * N},
                {&A::lora_h, L * kLoraTargets * N * lora_rank}};
  p.per_slot16 = {{&A::ln1_16, h16 * N * C},      {&A::qkv_16, h16 * N * QKV},
                  {&A::atty_16, h16 * N * Ct},    {&A::ln2_16, h16 * N * C},
                  {&A::fch_16, h16 * N * Fin},    {&A::fch_gelu_16, h16 * N * Ft},
                  {&A::lnf_16, m16 * head * N * C}};
  p.shared = {{&A::branch, N * C},       {&A::dresidual, N * C},
              {&A::dln, N * C},          {&A::dqkv, N * QKV},
              {&A::datty, N * Ct},       {&A::dfch, N * Fin},
              {&A::dfch_gelu, N * Ft},
              {&A::scratch, (lora_ && mixed_ ? 1 : 0) * N * widest_in},
              {&A::scratch2, (lora_ && options_.lora.dropout > 0 ? 1 : 0) * N * widest_in},
              {&A::lora_dh, N * lora_rank},
              {&A::softmax_stats, (tp_.size > 1 ? head : 0) * tp_.size * N * 3}};
  p.shared16 = {{&A::scratch16, m16 * N * widest_out}};
  return p;
}

int64_t GPTModel::attention_saved_stride() const {
  const int64_t NH = config_.n_head / tp_.size, T = config_.seq_len;
  return (int64_t)max_batch_ * NH * T * (attention_ == AttentionKind::full ? T : 1);
}

namespace {
// Arena sizes in floats, each array on a 64-byte boundary; 16-bit arrays take half.
int64_t aligned(int64_t n) { return (n + 15) / 16 * 16; }
int64_t aligned16(int64_t n) { return aligned((n + 1) / 2); }

std::string mib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return text;
}
}  // namespace

// The shared arrays once, the per-slot arrays once per slot.
std::pair<int64_t, int64_t> GPTModel::arena_floats(const ArenaPlan& plan) {
  int64_t per_slot_total = 0, shared_total = 0;
  for (const auto& [member, n] : plan.per_slot) per_slot_total += aligned(n);
  for (const auto& [member, n] : plan.per_slot16) per_slot_total += aligned16(n);
  for (const auto& [member, n] : plan.shared) shared_total += aligned(n);
  for (const auto& [member, n] : plan.shared16) shared_total += aligned16(n);
  return {shared_total, per_slot_total};
}

std::string GPTModel::memory_plan(int max_batch, int activation_slots) const {
  const auto [shared, per_slot] = arena_floats(activation_plan(max_batch));
  const int64_t weights = table_.total_numel(), trained = table().total_numel();
  // fp32 weights, gradients (and adapters under LoRA), the 16-bit copy in mixed precision
  const double model_bytes = 4.0 * (weights + (lora_ ? 2 : 1) * trained) + (mixed_ ? 2.0 * weights : 0);
  return std::string("the model's memory on ") + kernels::to_string(backend_.device()) +
         ": weights and gradients " + mib(model_bytes) + ", activations " +
         mib(4.0 * (shared + activation_slots * per_slot)) + " (micro_batch " +
         std::to_string(max_batch) + " x seq_len " + std::to_string(config_.seq_len) + ", " +
         std::to_string(activation_slots) + " slot(s), " + attention_kind() +
         " attention); AdamW's moments add " + mib(8.0 * trained) +
         ". A smaller train.micro_batch shrinks the activations";
}

// Carve the arena: first count, then allocate once, then hand out pointers.
void GPTModel::carve_activation_arena(int max_batch, int activation_slots) {
  const ArenaPlan plan = activation_plan(max_batch);
  const auto [shared_total, per_slot_total] = arena_floats(plan);
  arena_ = backend_.allocate<float>(shared_total + activation_slots * per_slot_total);
  float* next = arena_.data();
  auto carve16 = [&](int64_t n) {
    uint16_t* p = reinterpret_cast<uint16_t*>(next);
    next += aligned16(n);
    return p;
  };
  Activations scratch{};
  scratch.maxN = (int64_t)max_batch * config_.seq_len;
  for (const auto& [member, n] : plan.shared) scratch.*member = next, next += aligned(n);
  for (const auto& [member, n] : plan.shared16) scratch.*member = carve16(n);
  slots_.assign(activation_slots, scratch);
  for (Activations& a : slots_) {
    for (const auto& [member, n] : plan.per_slot) a.*member = next, next += aligned(n);
    for (const auto& [member, n] : plan.per_slot16) a.*member = carve16(n);
  }
}

float* GPTModel::params() {
  if (lora_) return lora_params_.data();
  weights16_stale_ = true;
  return params_.data();
}

float* GPTModel::base_params() {
  weights16_stale_ = true;
  return params_.data();
}

uint16_t* GPTModel::weights16_for_full_update() {
  if (!mixed_ || lora_ || options_.stochastic_rounding) return nullptr;
  weights16_stale_ = false;
  return params16_.data();
}

namespace {
// Parameter p's 16-bit copy, rounded stochastically with the bits of the stream `seed` at
// each element's index in the logical tensor, so that a tp slice rounds exactly as the
// whole tensor would. A box of whole rows is contiguous both here and in the logical
// tensor: one call.
void round_stochastic(kernels::Backend& backend, uint16_t* params16, const float* params,
                      const ParamInfo& p, uint64_t seed) {
  const bool matrix = p.shape.size() == 2;
  const int64_t cols = matrix ? p.shape[1] : p.shape[0];
  for (const LogicalBox& box : logical_boxes(p, 0, p.numel)) {
    const int64_t run = matrix ? box.count[1] : box.count[0];
    const int64_t col0 = matrix ? box.offset[1] : box.offset[0];
    const int64_t rows = matrix ? box.count[0] : 1, row0 = matrix ? box.offset[0] : 0;
    const int64_t begin = p.offset + box.local_begin;
    if (run == cols) {
      backend.round_to_bf16_stochastic(params16 + begin, params + begin, rows * cols, seed,
                                       (uint64_t)(row0 * cols));
      continue;
    }
    for (int64_t i = 0; i < rows; i++)
      backend.round_to_bf16_stochastic(params16 + begin + i * run, params + begin + i * run, run,
                                       seed, (uint64_t)((row0 + i) * cols + col0));
  }
}
}  // namespace

void GPTModel::refresh_weights16() {
  if (!mixed_ || !weights16_stale_) return;
  if (!options_.stochastic_rounding) {
    backend_.round_to_16bit(options_.precision, params16_.data(), params_.data(),
                            table_.total_numel());
  } else {
    // Each tensor from its own stream (a stream per refresh).
    const uint64_t refresh = weights16_refreshes_;
    for (const ParamInfo& p : table_.params())
      round_stochastic(backend_, params16_.data(), params_.data(), p,
                       fnv1a64(p.name) ^ (options_.seed * 0x9E3779B97F4A7C15ull) ^ (refresh << 40));
  }
  weights16_refreshes_++;
  weights16_stale_ = false;
}

GPTModel::~GPTModel() = default;

int64_t GPTModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : table_.params())
    if (!p.tied_copy) n += p.logical_numel();
  return n;
}

double GPTModel::grad_norm() const {
  const float* g = lora_ ? lora_grads_.data() : grads_.data();
  const SquareSums sums =
      range_sum_squares(table(), g, FlatRange{0, table().total_numel()}, backend_);
  double sharded = sums.sharded, replicated = sums.replicated;
  if (tp_.size > 1) sharded = all_reduce_value(*tp_.comm, sharded, ReduceOp::sum);
  double total = sharded + replicated;
  if (stage_.size > 1) total = all_reduce_value(*stage_.comm, total, ReduceOp::sum);
  return std::sqrt(total);
}

std::vector<float> GPTModel::gather_logical(int index, const float* base) const {
  const ParamInfo& p = table().params().at(index);
  std::vector<float> out((size_t)p.logical_numel());
  std::vector<float> local_copy;
  const float* local = backend_.host_view(base + p.offset, p.numel, local_copy);
  if (!p.shard.sharded()) {
    std::copy(local, local + p.numel, out.begin());
    return out;
  }
  std::vector<float> all((size_t)p.numel * tp_.size);
  tp_.comm->all_gather(local, all.data(), p.numel);
  ParamInfo q = p;
  for (int r = 0; r < tp_.size; r++) {
    q.shard.tp_rank = r;
    for (int64_t i = 0; i < p.numel; i++) {
      const int64_t li = q.logical_index(i);
      if (li >= 0) out[li] = all[(size_t)r * p.numel + i];
    }
  }
  return out;
}

void GPTModel::init_weights(uint64_t seed) {
  // The counter-based initialisation runs on the host; a GPU gets a copy of its values.
  auto init = [&](const ParamTable& table, kernels::Buffer<float>& params) {
    if (backend_.computes_on_host()) return init_params(table, seed, params.data());
    std::vector<float> host((size_t)params.size(), 0.0f);
    init_params(table, seed, host.data());
    backend_.to_device(params.data(), host.data(), params.size());
  };
  init(table_, params_);
  if (lora_) init(lora_table_, lora_params_);
  weights16_stale_ = true;
}

void GPTModel::zero_grad() { backend_.zero(grads(), flat_size_); }

// base: params_ or grads_ (null under LoRA: every pointer is then null, i.e. frozen).
GPTModel::ParamPtrs GPTModel::param_ptrs(float* base) const {
  const auto& p = table_.params();
  auto at = [&](int index) { return index < 0 || !base ? nullptr : base + p[index].offset; };
  ParamPtrs ptrs;
  ptrs.wte = at(wte_index_);
  ptrs.wpe = at(wpe_index_);
  ptrs.lnf_w = at(lnf_index_);
  ptrs.lnf_b = lnf_index_ < 0 || config_.llama() ? nullptr : at(lnf_index_ + 1);
  ptrs.lm_head = at(lm_head_index_);
  // The blocks' tensors, in the order the constructor added them.
  int i = block0_index_;
  auto next = [&]() { return base ? base + p[i++].offset : (i++, nullptr); };
  ptrs.blocks.assign(stage_.num_layers, ParamPtrs::Block{});
  for (auto& b : ptrs.blocks) {
    if (config_.llama()) {
      b.ln1_w = next(), b.q_w = next(), b.k_w = next(), b.v_w = next(), b.proj_w = next();
      b.ln2_w = next(), b.gate_w = next(), b.up_w = next(), b.down_w = next();
      continue;
    }
    b.ln1_w = next(), b.ln1_b = next(), b.qkv_w = next(), b.qkv_b = next();
    b.proj_w = next(), b.proj_b = next(), b.ln2_w = next(), b.ln2_b = next();
    b.up_w = next(), b.up_b = next(), b.down_w = next(), b.down_b = next();
  }
  return ptrs;
}

// weight[O, I] += scale * B[O, r] @ A[r, I] on this rank's slices (for a column-parallel
// layer B's rows are this rank's and A is whole; for a row-parallel one A's columns are
// this rank's and B is whole: either way the local product is the local slice of B @ A).
void GPTModel::merge_lora() {
  check(lora_, "merge_lora: the model has no LoRA adapters");
  const ParamPtrs p = param_ptrs(params_.data()), none = param_ptrs(nullptr);
  for (int l = 0; l < stage_.num_layers; l++)
    for (int t = 0; t < kLoraTargets; t++) {
      const LinearLayer L = block_linear(l, (LoraTarget)t, p, none);
      if (!L.lora.a) continue;
      backend_.sgemm(false, false, L.out, L.in, L.lora.rank, L.lora.scale, L.lora.b, L.lora.rank,
                     L.lora.a, L.in, 1.0f, const_cast<float*>(L.weight), L.in);
      backend_.zero(const_cast<float*>(L.lora.b), (int64_t)L.out * L.lora.rank);
    }
  weights16_stale_ = true;
}

void GPTModel::set_dropout_key(int slot, DropoutKey key) {
  check(slot >= 0 && slot < (int)slots_.size(), "activation slot out of range");
  slots_[slot].dropout = key;
}


}  // namespace tessera
