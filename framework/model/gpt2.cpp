#include "framework/model/gpt2.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "framework/util/error.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"
#include "parallel/huge_pages.h"
#include "parallel/rng.h"

namespace tessera {

namespace k = kernels;

GPTConfig GPTConfig::from_recipe(const ModelConfig& m) {
  GPTConfig c;
  c.n_layer = m.n_layer;
  c.n_head = m.n_head;
  c.n_embd = m.n_embd;
  c.vocab_size = m.vocab_size;
  c.padded_vocab_size = (m.vocab_size + m.vocab_pad_to - 1) / m.vocab_pad_to * m.vocab_pad_to;
  c.seq_len = m.seq_len;
  return c;
}

ModelOptions ModelOptions::from_recipe(const Recipe& r) {
  ModelOptions o;
  o.precision = kernels::dtype_from_name(r.train.precision);
  o.stochastic_rounding = r.train.stochastic_rounding;
  o.seed = r.train.seed;
  if (r.lora.rank > 0) {
    o.lora.rank = r.lora.rank;
    o.lora.alpha = (float)r.lora.alpha;
    o.lora.dropout = (float)r.lora.dropout;
    for (const std::string& t : lora_targets(r)) {
      const LoraTarget target = t == "qkv"        ? LoraTarget::qkv
                                : t == "attn_out" ? LoraTarget::attn_out
                                : t == "mlp_up"   ? LoraTarget::mlp_up
                                                  : LoraTarget::mlp_down;
      o.lora.targets[(int)target] = true;
    }
  }
  return o;
}

double GPTConfig::training_flops_per_token(int T) const {
  const double L = n_layer, C = n_embd, Vp = padded_vocab_size;
  return 3.0 * (2.0 * (L * 12.0 * C * C + C * Vp) + L * 4.0 * T * C);
}

void GPT2::FreeDeleter::operator()(void* p) const { std::free(p); }

namespace {
void* alloc_zeroed(size_t n_bytes) {
  // 64-byte alignment: every tensor in the buffer starts on a cache line. Buffers of
  // several MiB are 2 MiB-aligned and advised onto huge pages before their first touch
  // (parallel/huge_pages.h: fewer TLB misses, and a faster gradient all-reduce).
  constexpr size_t kHuge = 2u << 20;
  const bool huge = n_bytes >= 2 * kHuge;
  const size_t align = huge ? kHuge : 64;
  const size_t bytes = (n_bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes > 0 ? bytes : align);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes >> 20) + " MiB");
  if (huge) advise_huge_pages(p, bytes, /*collapse=*/false);
  std::memset(p, 0, bytes);
  return p;
}
float* alloc_floats(int64_t n) { return static_cast<float*>(alloc_zeroed(sizeof(float) * n)); }
}  // namespace

// Pointers to one copy (parameters or gradients) of every tensor.
struct GPT2::ParamPtrs {
  float *wte, *wpe, *lnf_w, *lnf_b;
  struct Block {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *ln2_w, *ln2_b, *up_w, *up_b, *down_w, *down_b;
  };
  std::vector<Block> blocks;
};

// The activation arena of one micro-batch in flight (a slot). Per-layer tensors are
// stored [L][max N * width] (L = this stage's layers) so that the backward pass finds
// every layer's inputs; the backward scratch exists once, for one layer, and all slots
// point to the same scratch.
struct GPT2::Activations {
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
  float* datt;                          // [B, NH, T, T]
  float* dfch;                          // [N, 4C] (gradient of fch and of fch_gelu in turn)
  float* dfch_gelu;                     // [N, 4C]
  uint16_t* scratch16;                  // [N, widest]  mixed precision: dout rounded
  float* scratch;                       // [N, widest]  LoRA in mixed precision: x widened
  float* scratch2;                      // [N, widest]  LoRA dropout: the dropped input
  float* lora_dh;                       // [N, r]
  DropoutKey dropout;                   // of the pass on this slot (LoRA)
};

GPT2::GPT2(const GPTConfig& cfg, int max_batch, TensorParallel tp, int flat_multiple,
           PipelineStage stage, int activation_slots, ModelOptions options)
    : config_(cfg),
      options_(options),
      mixed_(options.precision != kernels::Dtype::fp32),
      lora_(options.lora.rank > 0),
      max_batch_(max_batch),
      tp_(tp),
      stage_(stage) {
  check(!options.stochastic_rounding || options.precision == kernels::Dtype::bf16,
        "stochastic rounding is for bf16");
  check(cfg.n_embd % cfg.n_head == 0, "model.n_embd must be divisible by model.n_head");
  check(cfg.padded_vocab_size >= cfg.vocab_size, "padded vocabulary smaller than vocabulary");
  check(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "bad tensor-parallel rank/size");
  check(tp.size == 1 || tp.comm != MPI_COMM_NULL, "tensor parallelism needs a communicator");
  if (stage_.num_layers < 0) stage_.num_layers = cfg.n_layer - stage_.first_layer;
  check(stage.size >= 1 && stage.rank >= 0 && stage.rank < stage.size &&
            stage_.first_layer >= 0 && stage_.num_layers >= 1 &&
            stage_.first_layer + stage_.num_layers <= cfg.n_layer,
        "bad pipeline stage");
  check(stage.size == 1 || stage.comm != MPI_COMM_NULL, "pipeline parallelism needs a communicator");
  check(activation_slots >= 1, "at least one activation slot");
  // The layout's own checks (parallel/mesh.h) are the source of truth; these only guard
  // direct users of the class.
  check(cfg.n_head % tp.size == 0, "model.n_head must be divisible by parallel.tp");
  const int64_t C = cfg.n_embd, Vp = cfg.padded_vocab_size, L = stage_.num_layers;
  const float std_resid = 0.02f / std::sqrt(2.0f * (float)cfg.n_layer);
  const bool decay = true, no_decay = false;
  const ShardSpec rows{0, 1, tp.rank, tp.size}, cols{1, 1, tp.rank, tp.size};
  const ShardSpec qkv_rows{0, 3, tp.rank, tp.size};
  local_vocab_ = (int)((Vp + tp.size - 1) / tp.size);
  // Only this stage's parameters, under their logical names; the last stage's wte is the
  // LM head's copy of the first stage's (same name, same initial values).
  if (stage_.is_first() || stage_.is_last()) {
    wte_index_ = table_.add("wte.weight", {Vp, C}, Init::Normal, 0.02f, no_decay, rows);
    table_.set_tied_copy(wte_index_, !stage_.is_first());
  }
  if (stage_.is_first())
    wpe_index_ = table_.add("wpe.weight", {cfg.seq_len, C}, Init::Normal, 0.02f, no_decay);
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
  // LoRA adapters, A then B, split as linear.h says: A along the input of row-parallel
  // layers, B along the output of column-parallel ones (q|k|v blocks for qkv).
  const int r = options.lora.rank;
  const ShardSpec replicated{};
  struct AdapterShape {
    LoraTarget target;
    const char* name;
    int64_t in, out;
    ShardSpec a_split, b_split;
  };
  const AdapterShape adapters[kLoraTargets] = {
      {LoraTarget::qkv, "attn.qkv", C, 3 * C, replicated, qkv_rows},
      {LoraTarget::attn_out, "attn.proj", C, C, cols, replicated},
      {LoraTarget::mlp_up, "mlp.up", C, 4 * C, replicated, rows},
      {LoraTarget::mlp_down, "mlp.down", 4 * C, C, cols, replicated}};
  lora_index_.assign(L, {-1, -1, -1, -1});
  for (int l = 0; l < (lora_ ? L : 0); l++)
    for (const AdapterShape& ad : adapters) {
      if (!options.lora.on(ad.target)) continue;
      const std::string h = "h." + std::to_string(stage_.first_layer + l) + "." + ad.name;
      lora_index_[l][(int)ad.target] =
          lora_table_.add(h + ".lora_a", {r, ad.in}, Init::Normal,
                          1.0f / std::sqrt((float)ad.in), decay, ad.a_split);
      lora_table_.add(h + ".lora_b", {ad.out, r}, Init::Zeros, 0, decay, ad.b_split);
    }
  check(flat_multiple >= 1, "bad flat-buffer multiple");
  const int64_t unit = 16 * (int64_t)flat_multiple;
  flat_size_ = (table().total_numel() + unit - 1) / unit * unit;
  if (lora_) {  // the trained buffers are the adapters'; the base has no gradients
    params_.reset(alloc_floats(table_.total_numel()));
    lora_params_.reset(alloc_floats(flat_size_));
    lora_grads_.reset(alloc_floats(flat_size_));
  } else {
    params_.reset(alloc_floats(flat_size_));
    grads_.reset(alloc_floats(flat_size_));
  }
  if (mixed_)
    params16_.reset(static_cast<uint16_t*>(alloc_zeroed(sizeof(uint16_t) * table_.total_numel())));

  // Carve the arena: first count, then allocate once, then hand out pointers.
  // Per-rank widths: Ct = C / tp channels of attention (NH / tp heads), Ft = 4C / tp
  // MLP columns, Vl = ceil(Vp / tp) vocabulary columns.
  const int64_t N = (int64_t)max_batch * cfg.seq_len, NH = cfg.n_head / tp.size, T = cfg.seq_len;
  const int64_t Ct = C / tp.size, Ft = 4 * C / tp.size, Vl = local_vocab_;
  const int64_t head = stage_.is_last() ? 1 : 0;  // the final LayerNorm and logits
  // The linear layers' fp32 inputs are kept per layer in fp32 runs, for one layer at a
  // time in mixed precision (which keeps them in 16 bits: h16 layers).
  const int64_t h32 = mixed_ ? 1 : L, h16 = mixed_ ? L : 0, m16 = mixed_ ? 1 : 0;
  // Widest output gradient of a block layer (the LM head's is rounded in chunks of rows)
  // and widest input of an adapted layer.
  const int64_t widest_out = std::max({3 * Ct, Ft, C}), widest_in = std::max(C, Ft);
  const int64_t lora_rank = lora_ ? r : 0;
  using Member = float* Activations::*;
  using Member16 = uint16_t* Activations::*;
  const std::vector<std::pair<Member, int64_t>> per_slot = {
      {&Activations::encoded, N * C},       {&Activations::ln1, h32 * N * C},
      {&Activations::ln1_mean, L * N},      {&Activations::ln1_rstd, L * N},
      {&Activations::qkv, h32 * N * 3 * Ct}, {&Activations::atty, h32 * N * Ct},
      {&Activations::att, L * max_batch * NH * T * T},
      {&Activations::residual2, L * N * C}, {&Activations::ln2, h32 * N * C},
      {&Activations::ln2_mean, L * N},      {&Activations::ln2_rstd, L * N},
      {&Activations::fch, h32 * N * Ft},    {&Activations::fch_gelu, h32 * N * Ft},
      {&Activations::residual3, L * N * C}, {&Activations::lnf, head * N * C},
      {&Activations::lnf_mean, head * N},   {&Activations::lnf_rstd, head * N},
      {&Activations::logits, head * N * Vl}, {&Activations::losses, head * N},
      {&Activations::lora_h, L * kLoraTargets * N * lora_rank}};
  const std::vector<std::pair<Member16, int64_t>> per_slot16 = {
      {&Activations::ln1_16, h16 * N * C},      {&Activations::qkv_16, h16 * N * 3 * Ct},
      {&Activations::atty_16, h16 * N * Ct},    {&Activations::ln2_16, h16 * N * C},
      {&Activations::fch_16, h16 * N * Ft},     {&Activations::fch_gelu_16, h16 * N * Ft},
      {&Activations::lnf_16, m16 * head * N * C}};
  const std::vector<std::pair<Member, int64_t>> shared = {
      {&Activations::branch, N * C},       {&Activations::dresidual, N * C},
      {&Activations::dln, N * C},          {&Activations::dqkv, N * 3 * Ct},
      {&Activations::datty, N * Ct},       {&Activations::datt, max_batch * NH * T * T},
      {&Activations::dfch, N * Ft},        {&Activations::dfch_gelu, N * Ft},
      {&Activations::scratch, (lora_ && mixed_ ? 1 : 0) * N * widest_in},
      {&Activations::scratch2, (lora_ && options.lora.dropout > 0 ? 1 : 0) * N * widest_in},
      {&Activations::lora_dh, N * lora_rank}};
  const std::vector<std::pair<Member16, int64_t>> shared16 = {
      {&Activations::scratch16, m16 * N * widest_out}};
  // Sizes in floats, each array on a 64-byte boundary; 16-bit arrays take half.
  auto aligned = [](int64_t n) { return (n + 15) / 16 * 16; };
  auto aligned16 = [&](int64_t n) { return aligned((n + 1) / 2); };
  int64_t per_slot_total = 0, shared_total = 0;
  for (const auto& [member, n] : per_slot) per_slot_total += aligned(n);
  for (const auto& [member, n] : per_slot16) per_slot_total += aligned16(n);
  for (const auto& [member, n] : shared) shared_total += aligned(n);
  for (const auto& [member, n] : shared16) shared_total += aligned16(n);
  arena_.reset(alloc_floats(shared_total + activation_slots * per_slot_total));
  float* next = arena_.get();
  auto carve16 = [&](int64_t n) {
    uint16_t* p = reinterpret_cast<uint16_t*>(next);
    next += aligned16(n);
    return p;
  };
  Activations scratch{};
  scratch.maxN = N;
  for (const auto& [member, n] : shared) scratch.*member = next, next += aligned(n);
  for (const auto& [member, n] : shared16) scratch.*member = carve16(n);
  slots_.assign(activation_slots, scratch);
  for (Activations& a : slots_) {
    for (const auto& [member, n] : per_slot) a.*member = next, next += aligned(n);
    for (const auto& [member, n] : per_slot16) a.*member = carve16(n);
  }
}

float* GPT2::params() {
  if (lora_) return lora_params_.get();
  weights16_stale_ = true;
  return params_.get();
}

float* GPT2::base_params() {
  weights16_stale_ = true;
  return params_.get();
}

void GPT2::refresh_weights16() {
  if (!mixed_ || !weights16_stale_) return;
  const int64_t n = table_.total_numel();
  if (!options_.stochastic_rounding) {
    kernels::round_to_16bit(options_.precision, params16_.get(), params_.get(), n);
  } else {
    // Each tensor from its own stream, keyed by its logical element index, so a tp slice
    // rounds exactly as the whole tensor would (a stream per refresh).
    const uint64_t refresh = weights16_refreshes_;
    for (const ParamInfo& p : table_.params()) {
      const uint64_t seed = fnv1a64(p.name) ^ (options_.seed * 0x9E3779B97F4A7C15ull) ^
                            (refresh << 40);
      for (const LogicalBox& box : logical_boxes(p, 0, p.numel)) {
        const int64_t cols = p.shape.size() == 2 ? p.shape[1] : p.shape[0];
        const int64_t run = p.shape.size() == 2 ? box.count[1] : box.count[0];
        const int64_t col0 = p.shape.size() == 2 ? box.offset[1] : box.offset[0];
        const int64_t rows = p.shape.size() == 2 ? box.count[0] : 1;
        for (int64_t i = 0; i < rows; i++) {
          const int64_t local = p.offset + box.local_begin + i * run;
          const int64_t logical_row = p.shape.size() == 2 ? box.offset[0] + i : 0;
          kernels::round_to_bf16_stochastic(params16_.get() + local, params_.get() + local, run,
                                            seed, (uint64_t)(logical_row * cols + col0));
        }
      }
    }
  }
  weights16_refreshes_++;
  weights16_stale_ = false;
}

GPT2::~GPT2() = default;

LinearContext GPT2::linear_context() const {
  const Activations& shared = slots_[0];  // the scratch is the same in every slot
  const int64_t widest_out = std::max({3 * config_.n_embd, 4 * config_.n_embd}) / tp_.size;
  return LinearContext{options_.precision, tp_.size, tp_.comm, shared.scratch16,
                       mixed_ ? shared.maxN * widest_out : 0, shared.scratch, shared.scratch2,
                       shared.lora_dh};
}

void GPT2::set_dropout_key(int slot, DropoutKey key) {
  check(slot >= 0 && slot < (int)slots_.size(), "activation slot out of range");
  slots_[slot].dropout = key;
}

// pass (with T): the activation slot of a forward or backward pass, for LoRA dropout.
LinearLayer GPT2::block_linear(int l, LoraTarget t, const ParamPtrs& p, const ParamPtrs& g,
                               const Activations* pass, int T) const {
  const int C = config_.n_embd, Ct = C / tp_.size, Ft = 4 * C / tp_.size;
  const auto &w = p.blocks[l], &d = g.blocks[l];
  LinearLayer L;
  switch (t) {
    case LoraTarget::qkv:
      L = {TpSplit::column, C, 3 * Ct, w.qkv_w, w.qkv_b, nullptr, d.qkv_w, d.qkv_b, {}};
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

// The LM head: logits = lnf @ wte^T, column-parallel over the vocabulary, no bias.
LinearLayer GPT2::lm_head(const ParamPtrs& p, const ParamPtrs& g) const {
  LinearLayer L{TpSplit::column, config_.n_embd, local_vocab_, p.wte, nullptr, nullptr, g.wte,
                nullptr, {}};
  if (mixed_) L.weight16 = params16_.get() + (p.wte - params_.get());
  return L;
}

// x = its 16-bit rounding, which x16 keeps for the backward pass.
void GPT2::keep_16bit(float* x, uint16_t* x16, int64_t n) const {
  kernels::round_to_16bit(options_.precision, x16, x, n);
  kernels::widen_16bit(options_.precision, x, x16, n);
}

// Layer l's copy of an activation saved per layer: x32's own (fp32), or x16's widened into
// x32's one-layer buffer (mixed precision).
const float* GPT2::saved_fp32(float* x32, const uint16_t* x16, int l, int64_t N,
                              int64_t width) const {
  const int64_t maxN = slots_[0].maxN;
  if (!mixed_) return x32 + l * maxN * width;
  kernels::widen_16bit(options_.precision, x32, x16 + l * maxN * width, N * width);
  return x32;
}

float* GPT2::lora_h(Activations& a, int l, LoraTarget t) const {
  return a.lora_h + ((int64_t)l * kLoraTargets + (int)t) * a.maxN * options_.lora.rank;
}

int64_t GPT2::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : table_.params())
    if (!p.tied_copy) n += p.logical_numel();
  return n;
}

void GPT2::allreduce_tp(float* x, int64_t n) const {
  if (tp_.size == 1) return;
  check(n <= INT32_MAX, "tensor-parallel all-reduce too large");
  const int rc = MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, tp_.comm);
  check(rc == MPI_SUCCESS, "MPI_Allreduce in the tensor-parallel group failed");
}

double GPT2::grad_norm() const {
  double sharded = 0, replicated = 0;
  const float* g = lora_ ? lora_grads_.get() : grads_.get();
  for (const auto& p : table().params()) {
    if (p.tied_copy) continue;  // counted on the stage that owns it
    const double ss = k::sum_squares(g + p.offset, p.numel);  // local padding: 0
    (p.shard.sharded() ? sharded : replicated) += ss;
  }
  if (tp_.size > 1)
    MPI_Allreduce(MPI_IN_PLACE, &sharded, 1, MPI_DOUBLE, MPI_SUM, tp_.comm);
  double total = sharded + replicated;
  if (stage_.size > 1)
    MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_DOUBLE, MPI_SUM, stage_.comm);
  return std::sqrt(total);
}

std::vector<float> GPT2::gather_logical(int index, const float* base) const {
  const ParamInfo& p = table().params().at(index);
  std::vector<float> out((size_t)p.logical_numel());
  const float* local = base + p.offset;
  if (!p.shard.sharded()) {
    std::copy(local, local + p.numel, out.begin());
    return out;
  }
  std::vector<float> all((size_t)p.numel * tp_.size);
  MPI_Allgather(local, (int)p.numel, MPI_FLOAT, all.data(), (int)p.numel, MPI_FLOAT, tp_.comm);
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

int32_t GPT2::argmax_token(int64_t row) const {
  check(stage_.is_last(), "argmax_token: only the last pipeline stage has logits");
  const float* x = slots_[0].logits + row * local_vocab_;
  const int n = std::max(0, std::min(local_vocab_, config_.vocab_size - vocab_start()));
  struct {
    float value;
    int index;
  } best{-std::numeric_limits<float>::infinity(), INT32_MAX};
  for (int i = 0; i < n; i++)
    if (x[i] > best.value || best.index == INT32_MAX) best = {x[i], vocab_start() + i};
  if (tp_.size > 1)
    MPI_Allreduce(MPI_IN_PLACE, &best, 1, MPI_FLOAT_INT, MPI_MAXLOC, tp_.comm);
  return best.index;
}

// Fused vocabulary-parallel softmax + cross-entropy (Megatron): each rank holds the
// logits of columns vocab_start() .. + Vl; columns >= V (padding) are masked out. Three
// all-reduces over [N]: the row max, then the sum of exp and the target logit (only the
// rank owning the target contributes it). With `backward`, the logits become their
// gradient dloss * (softmax - onehot) in place.
void GPT2::vocab_parallel_crossentropy(Activations& a, const int32_t* targets, int N, float dloss,
                                       bool backward) {
  const int Vl = local_vocab_, start = vocab_start();
  const int n_real = std::max(0, std::min(Vl, config_.vocab_size - start));
  float* logits = a.logits;
  std::vector<float> maxv(N), sums(2 * (size_t)N);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* row = logits + (int64_t)n * Vl;
    float m = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n_real; i++) m = std::max(m, row[i]);
    maxv[n] = m;
  }
  if (tp_.size > 1) MPI_Allreduce(MPI_IN_PLACE, maxv.data(), N, MPI_FLOAT, MPI_MAX, tp_.comm);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* row = logits + (int64_t)n * Vl;
    const int t = targets[n] - start;
    sums[2 * n + 1] = (t >= 0 && t < n_real) ? row[t] - maxv[n] : 0.0f;
    float sum = 0;
    for (int i = 0; i < n_real; i++) {
      const float e = std::exp(row[i] - maxv[n]);
      if (backward) row[i] = e;
      sum += e;
    }
    sums[2 * n] = sum;
  }
  allreduce_tp(sums.data(), 2 * (int64_t)N);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    a.losses[n] = std::log(sums[2 * n]) - sums[2 * n + 1];
    if (!backward) continue;
    float* row = logits + (int64_t)n * Vl;
    const float scale = dloss / sums[2 * n];
    for (int i = 0; i < n_real; i++) row[i] *= scale;
    const int t = targets[n] - start;
    if (t >= 0 && t < n_real) row[t] -= dloss;
    for (int i = n_real; i < Vl; i++) row[i] = 0;
  }
}

const float* GPT2::logits() const {
  check(stage_.is_last(), "logits: only the last pipeline stage has logits");
  return slots_[0].logits;
}

void GPT2::init_weights(uint64_t seed) {
  init_params(table_, seed, params_.get());
  if (lora_) init_params(lora_table_, seed, lora_params_.get());
  weights16_stale_ = true;
}

void GPT2::zero_grad() { std::memset(grads(), 0, sizeof(float) * flat_size_); }

// base: params_ or grads_ (null under LoRA: every pointer is then null, i.e. frozen).
GPT2::ParamPtrs GPT2::param_ptrs(float* base) const {
  const auto& p = table_.params();
  auto at = [&](int index) { return index < 0 || !base ? nullptr : base + p[index].offset; };
  ParamPtrs ptrs;
  ptrs.wte = at(wte_index_);
  ptrs.wpe = at(wpe_index_);
  ptrs.lnf_w = at(lnf_index_);
  ptrs.lnf_b = lnf_index_ < 0 ? nullptr : at(lnf_index_ + 1);
  // The blocks' twelve tensors each, in the order the constructor added them.
  int i = block0_index_;
  auto next = [&]() { return base ? base + p[i++].offset : (i++, nullptr); };
  ptrs.blocks.resize(stage_.num_layers);
  for (auto& b : ptrs.blocks) {
    b.ln1_w = next(), b.ln1_b = next(), b.qkv_w = next(), b.qkv_b = next();
    b.proj_w = next(), b.proj_b = next(), b.ln2_w = next(), b.ln2_b = next();
    b.up_w = next(), b.up_b = next(), b.down_w = next(), b.down_b = next();
  }
  return ptrs;
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

void GPT2::check_shape(int slot, int B, int T) const {
  check(slot >= 0 && slot < (int)slots_.size(),
        "activation slot " + std::to_string(slot) + " of " + std::to_string(slots_.size()));
  check(B >= 1 && B <= max_batch_, "micro-batch " + std::to_string(B) + " exceeds the arena's " +
                                       std::to_string(max_batch_));
  check(T >= 1 && T <= config_.seq_len,
        "sequence length " + std::to_string(T) + " exceeds model.seq_len");
}

void GPT2::stage_forward(int slot, const int32_t* inputs, const float* x_in, int B, int T) {
  check_shape(slot, B, T);
  const int C = config_.n_embd, NH = config_.n_head / tp_.size, Vl = local_vocab_;
  const int Ct = C / tp_.size, Ft = 4 * C / tp_.size;
  const bool tp = tp_.size > 1;
  const int64_t N = (int64_t)B * T, maxN = slots_[slot].maxN;
  const int64_t att_stride = (int64_t)max_batch_ * NH * config_.seq_len * config_.seq_len;
  Activations& a = slots_[slot];
  const ParamPtrs p = param_ptrs(params_.get());

  if (stage_.is_first()) check_tokens(inputs, N, config_.vocab_size, "input");
  if (!stage_.is_first()) {
    std::memcpy(a.encoded, x_in, sizeof(float) * N * C);
  } else if (!tp) {
    k::encoder_forward(a.encoded, inputs, p.wte, p.wpe, B, T, C);
  } else {
    // Vocabulary-parallel embedding: rows of other ranks' tokens are 0 here; the
    // all-reduce assembles the lookup (one non-zero term per position: exact), then wpe.
    const int start = vocab_start();
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const int t = inputs[n] - start;
      float* out = a.encoded + n * C;
      if (t >= 0 && t < Vl)
        std::memcpy(out, p.wte + (int64_t)t * C, sizeof(float) * C);
      else
        std::memset(out, 0, sizeof(float) * C);
    }
    allreduce_tp(a.encoded, N * C);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
      for (int c = 0; c < C; c++) a.encoded[n * C + c] += p.wpe[(n % T) * C + c];
  }
  refresh_weights16();
  const ParamPtrs g = param_ptrs(grads_.get());
  const LinearContext ctx = linear_context();
  // The linear layers' fp32 inputs: layer l's own (fp32), or one transient buffer that is
  // rounded into layer l's 16-bit one (mixed precision).
  const int64_t per_layer = mixed_ ? 0 : 1;
  auto in16 = [&](uint16_t* base, int l, int64_t width) {
    return mixed_ ? base + l * maxN * width : nullptr;
  };
  for (int l = 0; l < stage_.num_layers; l++) {  // l: this stage's layer index
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
    k::layernorm_forward(ln1, a.ln1_mean + l * maxN, a.ln1_rstd + l * maxN, residual,
                         p.blocks[l].ln1_w, p.blocks[l].ln1_b, (int)N, C);
    linear(LoraTarget::qkv, qkv, ln1, in16(a.ln1_16, l, C));
    if (mixed_) keep_16bit(qkv, in16(a.qkv_16, l, 3 * Ct), N * 3 * Ct);
    k::attention_forward(atty, a.att + l * att_stride, qkv, B, T, Ct, NH);
    linear(LoraTarget::attn_out, a.branch, atty, in16(a.atty_16, l, Ct));
    k::residual_forward(residual2, residual, a.branch, N * C);
    k::layernorm_forward(ln2, a.ln2_mean + l * maxN, a.ln2_rstd + l * maxN, residual2,
                         p.blocks[l].ln2_w, p.blocks[l].ln2_b, (int)N, C);
    linear(LoraTarget::mlp_up, fch, ln2, in16(a.ln2_16, l, C));
    if (mixed_) keep_16bit(fch, in16(a.fch_16, l, Ft), N * Ft);
    k::gelu_forward(fch_gelu, fch, N * Ft);
    linear(LoraTarget::mlp_down, a.branch, fch_gelu, in16(a.fch_gelu_16, l, Ft));
    k::residual_forward(a.residual3 + l * maxN * C, residual2, a.branch, N * C);
  }
  if (!stage_.is_last()) return;
  k::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, stage_output_of(a), p.lnf_w, p.lnf_b,
                       (int)N, C);
  linear_forward(lm_head(p, g), ctx, a.logits, a.lnf, in16(a.lnf_16, 0, C), nullptr, (int)N);
}

int GPT2::activation_slots() const { return (int)slots_.size(); }

const float* GPT2::stage_output(int slot) const {
  check(slot >= 0 && slot < (int)slots_.size(), "activation slot out of range");
  return stage_output_of(slots_[slot]);
}

const float* GPT2::stage_output_of(const Activations& a) const {
  return a.residual3 + (int64_t)(stage_.num_layers - 1) * a.maxN * config_.n_embd;
}


float GPT2::stage_loss(int slot, const int32_t* targets, int B, int T, float grad_scale,
                       bool backward) {
  check(stage_.is_last(), "stage_loss: only the last pipeline stage computes the loss");
  check_shape(slot, B, T);
  const int64_t N = (int64_t)B * T;
  check_tokens(targets, N, config_.vocab_size, "target");
  Activations& a = slots_[slot];
  // The fused kernel turns the logits into their gradient in place.
  const float dloss = backward ? grad_scale / (float)N : 0.0f;
  if (tp_.size == 1)
    k::crossentropy_forward_backward(a.losses, backward ? a.logits : (float*)nullptr, a.logits,
                                     targets, dloss, (int)N, config_.vocab_size,
                                     config_.padded_vocab_size);
  else
    vocab_parallel_crossentropy(a, targets, (int)N, dloss, backward);
  return (float)mean_of(a.losses, N);
}

float GPT2::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  check(stage_.size == 1, "forward: under pipeline parallelism use the stage_* passes");
  stage_forward(0, inputs, nullptr, B, T);
  if (!targets) return std::numeric_limits<float>::quiet_NaN();
  return stage_loss(0, targets, B, T, 0.0f, false);
}

float GPT2::forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
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

void GPT2::stage_backward(int slot, const int32_t* inputs, const float* dx_out, float* dx_in,
                          int B, int T) {
  check_shape(slot, B, T);
  const int C = config_.n_embd, NH = config_.n_head / tp_.size, Vl = local_vocab_;
  const int Ct = C / tp_.size, Ft = 4 * C / tp_.size;
  const int64_t N = (int64_t)B * T, maxN = slots_[slot].maxN;
  const int64_t att_stride = (int64_t)max_batch_ * NH * config_.seq_len * config_.seq_len;
  Activations& a = slots_[slot];
  const ParamPtrs p = param_ptrs(params_.get());
  const ParamPtrs g = param_ptrs(grads_.get());  // all null under LoRA: the base is frozen
  const LinearContext ctx = linear_context();
  auto zero = [](float* x, int64_t n) { std::memset(x, 0, sizeof(float) * n); };
  // Announces parameters first .. first + count - 1 of table(), last one first.
  auto ready = [this](int first, int count) {
    if (grad_ready_)
      for (int i = first + count - 1; i >= first; i--) grad_ready_(i);
  };
  // A linear layer's saved input: layer l's fp32 copy, or its 16-bit one.
  const int64_t per_layer = mixed_ ? 0 : 1;
  auto saved = [&](const float* x32, const uint16_t* x16, int l, int64_t width) {
    return mixed_ ? SavedInput{nullptr, x16 + l * maxN * width}
                  : SavedInput{x32 + per_layer * l * maxN * width, nullptr};
  };

  // dresidual collects the gradient of the residual stream; every branch adds into it
  // (the residual add's backward is identity).
  if (stage_.is_last()) {
    // LM head (tied to wte) and final LayerNorm, from the dlogits stage_loss left.
    zero(a.dln, N * C);
    linear_backward(lm_head(p, g), ctx, a.dln, a.logits, saved(a.lnf, a.lnf_16, 0, C), nullptr,
                    (int)N);
    allreduce_tp(a.dln, N * C);  // the LM head is column-parallel over the vocabulary
    zero(a.dresidual, N * C);
    k::layernorm_backward(a.dresidual, g.lnf_w, g.lnf_b, a.dln, stage_output_of(a), p.lnf_w,
                          a.lnf_mean, a.lnf_rstd, (int)N, C);
    if (!lora_) ready(lnf_index_, 2);
  } else {
    std::memcpy(a.dresidual, dx_out, sizeof(float) * N * C);
  }

  for (int l = stage_.num_layers - 1; l >= 0; l--) {
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
    linear(LoraTarget::mlp_down, a.dfch_gelu, a.dresidual, saved(a.fch_gelu, a.fch_gelu_16, l, Ft));
    zero(a.dfch, N * Ft);
    k::gelu_backward(a.dfch, fch, a.dfch_gelu, N * Ft);
    zero(a.dln, N * C);
    linear(LoraTarget::mlp_up, a.dln, a.dfch, saved(a.ln2, a.ln2_16, l, C));
    allreduce_tp(a.dln, N * C);  // column-parallel up: sum the input's gradient
    k::layernorm_backward(a.dresidual, gw.ln2_w, gw.ln2_b, a.dln, residual2, w.ln2_w,
                          a.ln2_mean + l * maxN, a.ln2_rstd + l * maxN, (int)N, C);

    // Attention branch: dresidual is now d(residual2).
    zero(a.datty, N * Ct);
    linear(LoraTarget::attn_out, a.datty, a.dresidual, saved(a.atty, a.atty_16, l, Ct));
    zero(a.dqkv, N * 3 * Ct);
    k::attention_backward(a.dqkv, a.datt, a.datty, qkv, a.att + l * att_stride, B, T, Ct, NH);
    zero(a.dln, N * C);
    linear(LoraTarget::qkv, a.dln, a.dqkv, saved(a.ln1, a.ln1_16, l, C));
    allreduce_tp(a.dln, N * C);  // column-parallel qkv: sum the input's gradient
    k::layernorm_backward(a.dresidual, gw.ln1_w, gw.ln1_b, a.dln, residual, w.ln1_w,
                          a.ln1_mean + l * maxN, a.ln1_rstd + l * maxN, (int)N, C);
    if (!lora_) {
      const int kPerBlock = 12;
      ready(block0_index_ + kPerBlock * l, kPerBlock);
    } else {  // this layer's adapters, A and B of each target, in the table's order
      int first = -1, count = 0;
      for (int ia : lora_index_[l])
        if (ia >= 0) first = first < 0 ? ia : first, count += 2;
      if (count > 0) ready(first, count);
    }
  }
  if (!stage_.is_first()) {
    std::memcpy(dx_in, a.dresidual, sizeof(float) * N * C);
    if (wte_index() >= 0) ready(wte_index(), 1);  // the LM head's copy of wte
    return;
  }
  if (lora_) return;  // the embeddings are frozen
  if (tp_.size == 1) {
    k::encoder_backward(g.wte, g.wpe, a.dresidual, inputs, B, T, C);
  } else {
    // Vocabulary-parallel embedding: this rank's rows only; wpe (replicated) as usual.
    const int start = vocab_start();
    for (int64_t n = 0; n < N; n++) {
      const float* d = a.dresidual + n * C;
      float* dpos = g.wpe + (n % T) * C;
      for (int c = 0; c < C; c++) dpos[c] += d[c];
      const int t = inputs[n] - start;
      if (t < 0 || t >= Vl) continue;
      float* drow = g.wte + (int64_t)t * C;
      for (int c = 0; c < C; c++) drow[c] += d[c];
    }
  }
  ready(0, 2);  // wte (on one stage: the LM head and the embedding both added to it), wpe
}

// out[O, I] += scale * B[O, r] @ A[r, I] on this rank's slices (for a column-parallel
// layer B's rows are this rank's and A is whole; for a row-parallel one A's columns are
// this rank's and B is whole: either way the local product is the local slice of B @ A).
void GPT2::merge_lora() {
  check(lora_, "merge_lora: the model has no LoRA adapters");
  const ParamPtrs p = param_ptrs(params_.get()), none = param_ptrs(nullptr);
  for (int l = 0; l < stage_.num_layers; l++)
    for (int t = 0; t < kLoraTargets; t++) {
      const LinearLayer L = block_linear(l, (LoraTarget)t, p, none);
      if (!L.lora.a) continue;
      k::sgemm(false, false, L.out, L.in, L.lora.rank, L.lora.scale, L.lora.b, L.lora.rank,
               L.lora.a, L.in, 1.0f, const_cast<float*>(L.weight), L.in);
      std::memset(const_cast<float*>(L.lora.b), 0, sizeof(float) * L.out * L.lora.rank);
    }
  weights16_stale_ = true;
}

}  // namespace tessera
