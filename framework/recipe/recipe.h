// A training recipe: the YAML file a user writes, validated into typed structs.
// Every field has a default; the YAML file and `--set section.key=value` overrides only
// change what they name. Keys are the stable interface listed in docs/architecture.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cpu/mixed_precision.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

// The recipe's words for these keys are parsed once, into enums; to_string gives the
// word back (YAML, the run log, messages) and from_string is its inverse (false for any
// other word).
using Precision = kernels::Dtype;          // train.precision: the kernels' compute type
using Device = kernels::Device;            // train.device: cpu | cuda
enum class GradReduce { fp32, bf16 };       // parallel.grad_reduce: data-parallel wire type
enum class CommBackend { auto_, mpi, nccl };  // parallel.backend: "auto" | "mpi" | "nccl"
enum class AttentionEngine { auto_, own, cudnn };  // kernels.attention: "auto" | "own" | "cudnn"
const char* to_string(Precision p);
using kernels::to_string;  // to_string(Device): "cpu" | "cuda"
const char* to_string(GradReduce g);
const char* to_string(CommBackend b);
const char* to_string(AttentionEngine e);
const char* to_string(PipelineSchedule s);  // "gpipe" | "1f1b" (parallel.schedule)
bool from_string(const std::string& word, Precision& out);
bool from_string(const std::string& word, Device& out);
bool from_string(const std::string& word, GradReduce& out);
bool from_string(const std::string& word, CommBackend& out);
bool from_string(const std::string& word, AttentionEngine& out);
bool from_string(const std::string& word, PipelineSchedule& out);

struct ModelConfig {
  std::string family = "gpt2";  // gpt2 | llama (docs/llama.md)
  int n_layer = 2;              // transformer blocks
  int n_head = 2;               // attention heads; n_embd must be divisible by it
  int n_embd = 64;              // model width C
  int vocab_size = 256;         // real vocabulary V (token ids are < V)
  int vocab_pad_to = 1;         // the embedding has round_up(V, vocab_pad_to) rows (Vp)
  int seq_len = 64;             // maximum context T; also the training sequence length
  // The llama family only (a gpt2 recipe must leave them at their defaults):
  int n_kv_head = 0;            // key/value heads of grouped-query attention; 0: n_head
  int intermediate_size = 0;    // SwiGLU MLP width; 0: the Llama rule from n_embd
  double rope_theta = 10000;    // base of the rotary embedding's frequencies
  double norm_eps = 1e-5;       // RMSNorm's epsilon
  bool tie_embeddings = false;  // the LM head is the token embedding (GPT-2 always ties)
};

struct DataConfig {
  std::string train;  // path or glob of llm.c token shards (*.bin)
  std::string val;    // path or glob; empty = no validation
};

struct TrainConfig {
  int64_t steps = 100;         // optimizer steps
  int64_t exit_after_step = 0; // stop (with a checkpoint) after this step; 0 = run all
  int global_batch = 8;        // sequences per optimizer step, over all dp ranks
  int micro_batch = 4;         // sequences per forward/backward on one rank
  Device device = Device::cpu;  // where the model trains: cpu | cuda (docs/cuda.md)
  Precision precision = Precision::fp32;  // fp32 | bf16 | fp16 (docs/precision.md)
  bool stochastic_rounding = false;  // bf16: round the weights' compute copy stochastically
  double loss_scale = 65536;   // fp16: the initial dynamic loss scale
  int64_t loss_scale_window = 1000;  // fp16: good steps in a row that double the scale
  uint64_t seed = 1337;        // seeds weight init and data order
  int64_t eval_every = 0;      // validation loss every N steps (0 = never)
  int eval_batches = 4;        // global batches of data.val per validation
  int sample_tokens = 64;      // greedy sample printed at the end (0 = none)
};

struct OptimConfig {
  double lr = 6e-4;            // peak learning rate
  double min_lr = 6e-5;        // cosine floor
  int64_t warmup_steps = 0;    // linear warm-up from lr/warmup_steps to lr
  double weight_decay = 0.1;   // decoupled (AdamW) decay on matrices only
  bool decay_embeddings = false;  // also decay wte/wpe
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;      // global-norm clip; 0 = off
};

struct ParallelConfig {
  int dp = 1, tp = 1, pp = 1;  // world = dp * tp * pp
  int zero = 0;                // 0 | 1
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;  // gpipe | 1f1b
  std::string stage_layers;    // "" = balanced, else layers per stage: "3,1"
  double bucket_mb = 25.0;     // gradient all-reduce bucket size
  GradReduce grad_reduce = GradReduce::fp32;  // fp32 | bf16: data-parallel gradients on the wire
  bool shared_memory = true;   // dp ranks on one node sum gradients in shared memory
  CommBackend backend = CommBackend::auto_;  // the groups' collectives: auto = nccl on cuda
  double nccl_timeout_s = 600;  // an NCCL operation unfinished this long ends the run; 0 = never
};
// The collectives a run uses: parallel.backend, with auto resolved by train.device.
CommBackend resolved_backend(const ParallelConfig& parallel, Device device);

struct CheckpointConfig {
  std::string dir = "ckpt";    // where step_XXXXXX/ directories go
  int64_t every = 0;           // checkpoint every N steps (0 = only at the end)
  int keep_last = 3;           // older complete checkpoints are deleted
  std::string resume = "none"; // none | auto | PATH
  bool async = false;
};

struct LogConfig {
  std::string dir = "runs";    // runs/<run-id>/run.jsonl
  int64_t every = 1;           // metric line every N steps
  bool tensorboard = false;
};

// LoRA fine-tuning (docs/lora.md): rank 0 = off.
struct LoraConfig {
  int rank = 0;                // r: adapters A [r, in] and B [out, r]
  double alpha = 16;           // the adapter's output is scaled by alpha / r
  double dropout = 0;          // on the adapter's input, training only
  std::string targets = "all";  // layers that get adapters; all: every linear layer of a block
  std::string base;            // the base model's checkpoint (required when rank > 0)
};

// Which implementation of an op runs where there is more than one.
struct KernelsConfig {
  // The attention on GPUs: own = our kernels; cudnn = cuDNN's fused attention, falling back
  // to our flash kernel for a shape cuDNN cannot build; auto = own (deterministic).
  AttentionEngine attention = AttentionEngine::auto_;
};

struct Recipe {
  std::string source = "<defaults>";  // file it was read from, for messages
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LogConfig log;
  LoraConfig lora;
  KernelsConfig kernels;
};

// Reads a recipe file, applies `key=value` overrides (YAML scalars) in order, then
// validates the result. Throws tessera::Error naming the file, key (with line:column when known)
// and what was expected, for a missing file, malformed YAML, an unknown key, a wrong
// type or an out-of-range value.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from YAML text; `source` names it in messages.
Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// The fully resolved recipe as YAML (for the run log and checkpoints).
std::string recipe_to_yaml(const Recipe& recipe);

// The value of key `name` ("section.key") as the resolved recipe's YAML writes it, without
// quotes: "cuda", "3", "0.0003". Throws tessera::Error naming the key when there is none.
std::string recipe_value(const Recipe& recipe, const std::string& name);

// Checks cross-field constraints (n_embd % n_head, batch divisibility, ...).
void validate_recipe(const Recipe& recipe);

// The layers of each of the parallel.pp pipeline stages: parallel.stage_layers parsed
// ("3,1"), or balanced when it is empty. Throws tessera::Error naming the recipe and the
// key when the list is malformed, has not pp entries >= 1, or does not sum to
// model.n_layer.
std::vector<int> pipeline_stage_layers(const Recipe& recipe);

// lora.targets parsed: the listed layers among qkv, attn_out, mlp_up, mlp_down, in the
// order written. Throws tessera::Error naming the recipe and the key for an unknown or
// repeated name or an empty list.
std::vector<std::string> lora_targets(const Recipe& recipe);

// The key reference of docs/recipes.md (a Markdown table per section: key, type, default,
// allowed values, description), generated from the same table that parses recipes. A
// unit test checks that docs/recipes.md contains exactly this text.
std::string recipe_reference_markdown();

}  // namespace tessera
