// GPTModel: the decoder-only transformer of both families (named as Megatron-Core's
// GPTModel, which serves Llama-style models too). GPT-2: token + learned position
// embeddings, n_layer pre-LayerNorm blocks (causal multi-head attention with QKV bias and
// an output projection, MLP 4C with GELU-tanh), a final LayerNorm, and an LM head tied to
// the token embedding. Llama: the differences are listed at Family below and in
// llama_block.cpp. Forward and backward are written out by hand on top of the op list
// behind kernels/backend.h; there is no autograd.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/model/linear.h"
#include "framework/model/params.h"
#include "framework/recipe/recipe.h"
#include "kernels/backend.h"
#include "kernels/buffer.h"
#include "kernels/cpu/mixed_precision.h"
#include "parallel/communicator.h"

namespace tessera {

// The two families of decoder-only transformers (docs/llama.md compares them):
//   gpt2:  LayerNorm, learned position embeddings, multi-head attention with biases,
//          GELU MLP of 4C, LM head tied to the token embedding.
//   llama: RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU MLP,
//          no biases, LM head tied or not.
enum class Family { gpt2, llama };

struct GPTConfig {
  Family family = Family::gpt2;
  int n_layer = 2, n_head = 2, n_embd = 64;
  int vocab_size = 256;         // V: real tokens
  int padded_vocab_size = 256;  // Vp >= V: rows of the logical wte, the same for every
                                // layout (extra rows never win the softmax)
  int seq_len = 64;             // maximum T (rows of wpe)
  // llama only:
  int n_kv_head = 0;            // key/value heads (grouped-query attention); 0: n_head
  int intermediate_size = 0;    // SwiGLU width; 0: Llama's rule (mlp_width)
  double rope_theta = 10000;
  float norm_eps = 1e-5f;       // RMSNorm's
  bool tie_embeddings = false;  // the LM head is the token embedding (gpt2: always)

  static GPTConfig from_recipe(const ModelConfig& model);
  bool llama() const { return family == Family::llama; }
  int head_size() const { return n_embd / n_head; }
  int kv_heads() const { return llama() && n_kv_head > 0 ? n_kv_head : n_head; }
  bool tied() const { return !llama() || tie_embeddings; }
  // The MLP's hidden width F: gpt2 4C; llama intermediate_size, or by default Llama's rule
  // 2/3 of 4C rounded up to a multiple of 256.
  int mlp_width() const;
  // Training FLOPs per token (forward + backward = 3x forward) of every matmul and of the
  // attention counted over full T x T score matrices (the usual convention, although the
  // CPU kernel skips the causally masked half), at sequence length T:
  //   gpt2:  3 * (2 * (L * 12 C^2 + C * Vp) + L * 4 * T * C)
  //   llama: 3 * (2 * (L * (2 C^2 + 2 C Ckv + 3 C F) + C * Vp) + L * 4 * T * C),
  //          Ckv = n_kv_head * head size
  // See docs/performance.md.
  double training_flops_per_token(int T) const;
};

// Wall-clock split of the last forward_backward(), for the benchmarks.
struct PassTimes {
  double forward_ms = 0, backward_ms = 0;
};

// This rank's place in its tensor-parallel group (Megatron). size 1 (the default) is the
// single-process model; comm may then be null.
struct TensorParallel {
  int rank = 0, size = 1;
  Communicator* comm = nullptr;
};

// This rank's pipeline stage: the consecutive layers first_layer .. first_layer +
// num_layers - 1. The first stage also holds the embeddings (wte, wpe), the last the
// final LayerNorm and the LM head, i.e. its own copy of wte (tied: the pipeline keeps
// the two copies equal by summing their gradients, see framework/train/pipeline.h).
// size 1 (the default) is the whole model; comm (the pp group) may then be null.
struct PipelineStage {
  int rank = 0, size = 1;
  int first_layer = 0, num_layers = -1;  // -1: all of config.n_layer
  Communicator* comm = nullptr;
  bool is_first() const { return rank == 0; }
  bool is_last() const { return rank == size - 1; }
};

// The linear layers of a block, which can carry LoRA adapters (lora.targets): gpt2's fused
// qkv, attn_out, mlp_up, mlp_down; llama's q, k, v, attn_out (o), mlp_gate, mlp_up,
// mlp_down.
enum class LoraTarget { qkv = 0, attn_out = 1, mlp_up = 2, mlp_down = 3, q = 4, k = 5, v = 6,
                        mlp_gate = 7 };
inline constexpr int kLoraTargets = 8;

// The layer's name in lora.targets.
inline const char* lora_target_name(LoraTarget t) {
  static const char* const names[kLoraTargets] = {"qkv", "attn_out", "mlp_up", "mlp_down",
                                                  "q",   "k",        "v",      "mlp_gate"};
  return names[(int)t];
}

// Every linear layer of a block of `family` (lora.targets all).
inline std::vector<LoraTarget> block_linears(Family family) {
  if (family == Family::llama)
    return {LoraTarget::q,        LoraTarget::k,      LoraTarget::v,       LoraTarget::attn_out,
            LoraTarget::mlp_gate, LoraTarget::mlp_up, LoraTarget::mlp_down};
  return {LoraTarget::qkv, LoraTarget::attn_out, LoraTarget::mlp_up, LoraTarget::mlp_down};
}

// LoRA adapters (docs/lora.md): rank 0 = none.
struct LoraSpec {
  int rank = 0;
  float alpha = 16;
  float dropout = 0;  // on the adapters' input, in training passes (see set_dropout_key)
  bool targets[kLoraTargets] = {};
  bool on(LoraTarget t) const { return rank > 0 && targets[(int)t]; }
};

// How the module computes, beyond its shape and layout (recipe keys train.device,
// train.precision, train.stochastic_rounding, lora.*, kernels.attention).
struct ModelOptions {
  // Where it computes (kernels/backend.h): every op and every parameter, gradient and
  // activation buffer goes through it. Null: kernels::cpu_backend(). Not set by
  // from_recipe: the trainer picks it from train.device (framework/train/train_setup.cpp).
  kernels::Backend* backend = nullptr;
  kernels::Dtype precision = kernels::Dtype::fp32;
  bool stochastic_rounding = false;  // bf16 weight copies rounded stochastically
  uint64_t seed = 0;                 // of the stochastic rounding
  LoraSpec lora;
  // Which attention engine runs (kernels.attention): auto and own are our kernels; cudnn
  // is cuDNN's (gpt2 in bf16 only), with our flash kernel as its fallback.
  AttentionEngine attention = AttentionEngine::auto_;
  // One-line notices on stderr (cuDNN attention falling back to our flash kernel). The
  // trainer leaves them to world rank 0, so that a job says each once.
  bool print_notices = true;
  // Where the trained parameters' gradients live: called once with their size (floats);
  // memory it returns must be zeroed, 64-byte aligned and outlive the model (the
  // data-parallel communicator's shared memory, Communicator::allocate_shared, where the
  // gradient sum needs no copies). Unset, or returning null: the model's own memory.
  std::function<float*(int64_t count)> grad_storage;
  static ModelOptions from_recipe(const Recipe& recipe);
};

// Tensor parallelism (Megatron-LM, docs/parallel.md) is part of this one module; tp = 1
// is the degenerate case. Split across the tp ranks, all in the shard specs of table():
//   wte            rows (vocabulary-parallel embedding and LM head), ceil(Vp / tp) each
//   attn.qkv       rows of this rank's heads in each of q, k, v (column-parallel)
//   attn.proj      columns of this rank's heads (row-parallel; bias replicated)
//   mlp.up         rows (column-parallel); mlp.down columns (row-parallel; bias replicated)
//   LayerNorms, wpe, row-parallel biases: replicated.
// Communication is an all-reduce (sum) in the tp communicator: after each row-parallel
// matmul and the vocabulary-parallel embedding (forward), on the gradient of the input
// of each column-parallel block and of the LM head (backward), and three small ones in
// the vocabulary-parallel cross-entropy. Every linear layer goes through linear.h, which
// also applies the precision and the LoRA adapters.
//
// Mixed precision (options.precision bf16 or fp16): the fp32 parameters stay the master
// copy; a 16-bit copy of them, refreshed after they change, feeds the GEMMs, and the
// inputs of the linear layers are kept for the backward pass in 16 bits only.
//
// LoRA (options.lora): the base weights are frozen (no gradient buffer), and table(),
// params(), grads() are those of the adapters, which are all the optimizer sees.
class GPTModel {
 public:
  // Lays out the parameters (this tp rank's slices) and allocates parameters, gradients
  // and an activation arena for micro-batches of up to max_batch sequences of
  // config.seq_len tokens.
  // flat_multiple > 1 pads the flat buffers (params(), grads()) with zeros up to a
  // multiple of 16 * flat_multiple floats, so ZeRO-1 can split them into flat_multiple
  // (= dp) equal, 64-byte aligned ranges; the padding belongs to no parameter.
  // Under pipeline parallelism the module holds one stage (see PipelineStage) and keeps
  // the activations of `activation_slots` micro-batches, so that a schedule can run
  // several forward passes before their backward passes (GPipe: all of a step's; 1F1B:
  // at most pp - stage).
  GPTModel(const GPTConfig& config, int max_batch, TensorParallel tp = {}, int flat_multiple = 1,
       PipelineStage stage = {}, int activation_slots = 1, ModelOptions options = {});
  ~GPTModel();
  GPTModel(const GPTModel&) = delete;
  GPTModel& operator=(const GPTModel&) = delete;

  // Parameters from the counter-based RNG: N(0, 0.02) for matrices and embeddings,
  // N(0, 0.02 / sqrt(2 n_layer)) for the two projections into the residual stream
  // (GPT-2's scaled init), LayerNorm weights 1, biases 0; LoRA's A N(0, 1 / in) and B 0
  // (so a fresh adapter changes nothing). Computed on the host, then copied to a device
  // backend's memory.
  void init_weights(uint64_t seed);

  // The whole model in one call (a single pipeline stage), on activation slot 0.
  // Forward pass on inputs [B, T] (B <= max_batch, T <= seq_len). Without targets the
  // logits [B, T, local_vocab()] (this tp rank's columns) stay readable through logits();
  // with targets [B, T] returns the mean cross-entropy over the B*T positions (NaN
  // without targets). Collective over the tp group.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);

  // Forward and backward in one go: returns the mean loss of this micro-batch and ADDS
  // grad_scale * d(mean loss)/d(parameter) into grads(). The trainer passes
  // 1 / (micro-batches per step * dp) so the summed gradient is that of the global mean.
  float forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         float grad_scale);

  void zero_grad();

  // LoRA dropout in the next passes on activation slot `slot`: on (training) or off (the
  // default: evaluation, generation), with the mask of optimizer step `step` for a
  // micro-batch whose first sequence is sample `first_sample` of the global batch.
  struct DropoutKey {
    bool on = false;
    uint64_t step = 0;
    int64_t first_sample = 0;
  };
  void set_dropout_key(int slot, DropoutKey key);

  // One pipeline stage's part of a micro-batch, on activation slot `slot` (which keeps
  // what the backward pass needs until stage_backward on the same slot). x is the
  // residual stream [B, T, C] between stages. Collective over the tp group.
  // Token ids (inputs, targets) are host memory (from the data loader); the messages
  // between stages (x_in, dx_out, dx_in) are the backend's memory, which the pp
  // communicator sends device to device.
  //   stage_forward: the first stage embeds `inputs`, the others start from x_in; then
  //     this stage's blocks; the last stage also computes the logits.
  //   stage_output: the residual stream after this stage's last block (not last stage),
  //     in the backend's memory.
  //   stage_loss (last stage): mean cross-entropy against targets; with backward, the
  //     logits become d(grad_scale * mean loss)/d(logits) in place, ready for
  //     stage_backward.
  //   stage_backward: ADDS this stage's parameter gradients, from dx_out = d/d(stage
  //     output) (ignored on the last stage, which starts from its logits); writes
  //     d/d(stage input) to dx_in (ignored on the first stage, which ends in the
  //     embedding). The grad-ready hook fires as in forward_backward().
  void stage_forward(int slot, const int32_t* inputs, const float* x_in, int B, int T);
  const float* stage_output(int slot) const;
  float stage_loss(int slot, const int32_t* targets, int B, int T, float grad_scale, bool backward);
  void stage_backward(int slot, const int32_t* inputs, const float* dx_out, float* dx_in, int B,
                      int T);

  // Called during forward_backward() with a parameter's index in table() as soon as its
  // gradient is final (nothing later in the backward pass adds to it): ln_f first, then
  // the blocks from last to first, then wpe and wte — the reverse of the table's order.
  // Data parallelism uses it to start each bucket's all-reduce while the backward pass
  // goes on. Empty (the default): no calls.
  using GradReadyHook = std::function<void(int param_index)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }

  const GPTConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // Where the model computes; params(), grads(), logits() and stage_output() point into
  // its device's memory.
  kernels::Backend& backend() const { return backend_; }
  // "full" (our kernel, T x T probabilities kept), "flash" (the backend's flash
  // attention) or "cudnn" (cuDNN's fused attention): the engine of micro-batches of
  // max_batch sequences of config.seq_len tokens.
  const char* attention_kind() const;
  // The trained parameters: all of the model's, or under LoRA the adapters only.
  // Writing through params() (or base_params()) is noticed: the 16-bit copy of mixed
  // precision is refreshed before the next forward pass.
  const ParamTable& table() const { return lora_ ? lora_table_ : table_; }
  float* params();
  float* grads() { return lora_ ? lora_grads_.get() : grads_.get(); }
  int64_t flat_size() const { return flat_size_; }  // floats in params()/grads() (padded)
  // The base model's weights (under LoRA frozen; otherwise table() and params()).
  const ParamTable& base_table() const { return table_; }
  float* base_params();
  const float* base_params() const { return params_.get(); }
  // Mixed precision: the 16-bit compute copy (laid out like params()), for an optimizer
  // that rewrites it in the same pass as it updates EVERY element of params()
  // (AdamW::step's copy16; not ZeRO-1, which updates a range). The copy then counts as
  // fresh. Null when the copy cannot be made so: fp32, stochastic rounding, LoRA (the
  // trained parameters are not the copied ones); the copy is then refreshed before the
  // next forward pass as usual.
  uint16_t* weights16_for_full_update();
  bool has_lora() const { return lora_; }
  // Logical parameters of this stage (of the whole model at pp = 1), without alignment
  // padding and without a tied copy.
  int64_t num_parameters() const;
  // [B, T, local_vocab()] of last forward(): logical vocabulary columns
  // vocab_start() .. vocab_start() + local_vocab() - 1 (those >= V are padding).
  const float* logits() const;
  int local_vocab() const { return local_vocab_; }
  int vocab_start() const { return tp_.rank * local_vocab_; }
  const TensorParallel& tp() const { return tp_; }
  const PipelineStage& stage() const { return stage_; }
  int activation_slots() const;
  // Index in table() of wte, or -1 when this stage has none (a middle pipeline stage) or
  // it is frozen (LoRA).
  int wte_index() const { return lora_ ? -1 : wte_index_; }
  // The greedy next token after position `row` of the last forward(): argmax over the
  // real vocabulary (lowest id on ties), across the tp group (collective).
  int32_t argmax_token(int64_t row) const;
  // Global L2 norm of the gradient of the logical model: squares of sharded parameters
  // summed over the tp group, replicated ones counted once, every stage's summed over the
  // pp group with the last stage's tied copy of wte left out (collective over tp and pp).
  double grad_norm() const;
  // The full logical tensor of parameter `index` of table() from the flat buffer `base`
  // (params(), grads() or an optimizer moment laid out like them), gathered over the tp
  // group (collective). Reads `base` on the host, as init_weights writes.
  std::vector<float> gather_logical(int index, const float* base) const;
  // LoRA: adds scale * B @ A into every adapted base weight and zeroes B, so that the
  // base weights alone compute what base plus adapters computed (tessera lora merge).
  void merge_lora();
  const PassTimes& last_times() const { return times_; }

 private:
  struct Activations;
  struct ParamPtrs;
  void check_shape(int slot, int B, int T) const;
  const float* stage_output_of(const Activations& a) const;
  ParamPtrs param_ptrs(float* base) const;
  // Linear layer t of this stage's block l (see linear.h), with p and g from param_ptrs
  // of the parameters and of the gradients (null pointers: frozen).
  LinearLayer block_linear(int l, LoraTarget t, const ParamPtrs& p, const ParamPtrs& g,
                           const Activations* pass = nullptr, int T = 1) const;
  LinearLayer lm_head(const ParamPtrs& p, const ParamPtrs& g) const;
  LinearContext linear_context() const;
  float* lora_h(Activations& a, int l, LoraTarget t) const;  // [N, r] of slot a
  void keep_16bit(float* x, uint16_t* x16, int64_t n) const;
  const float* saved_fp32(float* x32, const uint16_t* x16, int l, int64_t N, int64_t width) const;
  void refresh_weights16();  // the 16-bit copy of params_, if stale

  // Block l's forward pass, from the residual stream x into a.residual3's layer l: gpt2's
  // (gpt_model.cpp) or llama's (llama_block.cpp).
  void gpt2_block_forward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B,
                          int T);
  void llama_block_forward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B,
                           int T);
  // The backward pass in parts (stage_backward runs them in turn).
  void head_backward(Activations& a, const ParamPtrs& p, const ParamPtrs& g, int64_t N);
  void block_backward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B, int T);
  void llama_block_backward(Activations& a, int l, const ParamPtrs& p, const ParamPtrs& g, int B,
                            int T);
  void embedding_backward(Activations& a, const ParamPtrs& g, const int32_t* inputs, int B, int T);
  void announce_ready(int first, int count) const;
  void announce_block_ready(int l) const;
  SavedInput saved_input(const Activations& a, const float* x32, const uint16_t* x16, int l,
                         int64_t width) const;
  // The constructor's steps, in order (gpt_model_setup.cpp).
  void check_layout(int activation_slots) const;
  // How the attention computes. full: our kernel, keeping the T x T probabilities for the
  // backward; flash: the backend's flash attention (a GPU's, in bf16, head size 64 or
  // 128), keeping each row's log-sum-exp instead; cudnn: cuDNN's, under flash's contract,
  // so that our flash kernel can stand in for it on any shape cuDNN cannot build.
  enum class AttentionKind { full, flash, cudnn };
  AttentionKind choose_attention();  // options.attention, for this model's shape
  // The engine of a micro-batch of B x T: attention_, unless that is cudnn and cuDNN
  // cannot build this shape (then flash). cudnn_or_flash asks the backend, once a shape.
  AttentionKind attention_for(int B, int T);
  AttentionKind cudnn_or_flash(int B, int T);
  void notice(const std::string& line) const;  // on stderr, if options.print_notices
  void lay_out_parameters();
  void lay_out_llama_parameters();
  // Per-rank widths of the block's activations: q|k|v outputs, the queries (and so the
  // attention's output), the keys and values, the MLP's input to its activation (gpt2 F,
  // llama gate|up 2F) and hidden width F.
  struct Widths {
    int64_t qkv, q, kv, mlp_in, mlp;
  };
  Widths widths() const;
  int params_per_block() const { return config_.llama() ? 9 : 12; }
  struct RopeTables {
    const float *cos, *sin;  // [seq_len, head size / 2] each, in the backend's memory
  };
  RopeTables rope_tables() const;
  void lay_out_lora();
  void allocate_buffers(int flat_multiple);
  struct ArenaPlan;
  ArenaPlan activation_plan(int max_batch) const;
  void carve_activation_arena(int max_batch, int activation_slots);
  static std::pair<int64_t, int64_t> arena_floats(const ArenaPlan& plan);  // shared, per slot
  // What the model's buffers take, for an out-of-memory message: "the model's memory on
  // cuda: weights and gradients ..., activations ... A smaller train.micro_batch ...".
  std::string memory_plan(int max_batch, int activation_slots) const;
  // Floats the attention of one layer keeps for its backward: [max_batch, NH, T, T]
  // probabilities, or under flash or cuDNN attention [max_batch, NH, T] log-sum-exps.
  int64_t attention_saved_stride() const;

  void allreduce_tp(float* x, int64_t n) const;  // sum over the tp group (no-op at tp 1)
  void vocab_parallel_crossentropy(Activations& a, const int32_t* targets, int N, float dloss,
                                   bool backward);

  GPTConfig config_;
  ModelOptions options_;
  kernels::Backend& backend_;
  bool mixed_ = false, lora_ = false;
  AttentionKind attention_ = AttentionKind::full;
  // cudnn: the engine of each micro-batch shape (B, T) met so far (T is seq_len: shorter
  // sequences take flash without asking), its fallback said when first met.
  std::map<std::pair<int, int>, AttentionKind> cudnn_shapes_;
  int max_batch_;
  TensorParallel tp_;
  PipelineStage stage_;
  int local_vocab_;
  // In table_; lm_head_index_: llama's untied LM head (else the LM head is wte).
  int wte_index_ = -1, wpe_index_ = -1, block0_index_ = -1, lnf_index_ = -1, lm_head_index_ = -1;
  ParamTable table_;       // the base model
  ParamTable lora_table_;  // the adapters: A then B of each target of each layer, in order
  std::vector<std::array<int, kLoraTargets>> lora_index_;  // [layer][target]: A's index, or -1
  int64_t flat_size_ = 0;  // of table(): total_numel() padded to the flat_multiple
  // grads_ is null under LoRA (frozen base) and a view of options.grad_storage's memory
  // when it gives some; lora_* exist only under LoRA; params16_ only in mixed precision.
  kernels::Buffer<float> params_, grads_, lora_params_, lora_grads_, arena_;
  kernels::Buffer<uint16_t> params16_;
  kernels::Buffer<float> rope_;  // llama: cos then sin tables [seq_len, head size / 2]
  bool weights16_stale_ = true;
  uint64_t weights16_refreshes_ = 0;  // stochastic rounding draws new bits each time
  std::vector<Activations> slots_;  // per micro-batch in flight; backward scratch shared
  PassTimes times_;
  GradReadyHook grad_ready_;
};

}  // namespace tessera
