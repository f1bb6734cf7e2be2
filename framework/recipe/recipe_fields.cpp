// The table of recipe keys (see recipe_fields.h) and the per-value work on it: parsing a
// scalar into a typed field, checking its rule, printing it back, suggesting keys.
#include "framework/recipe/recipe_fields.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

namespace tessera::recipe_detail {
namespace {

// ---------------------------------------------------------------------------------------
// Building table rows.

// Typed pointers into a Recipe, generated from member pointers so that the table names
// each field once and the compiler checks that it exists.
template <auto SectionMember, auto FieldMember>
Slot slot_of(Recipe& r) {
  return &((r.*SectionMember).*FieldMember);
}
template <auto SectionMember, auto FieldMember>
ConstSlot const_slot_of(const Recipe& r) {
  return &((r.*SectionMember).*FieldMember);
}

template <auto SectionMember, auto FieldMember>
Field make_field(const char* section, const char* key, Rule rule, const char* doc) {
  return Field{section, key, &slot_of<SectionMember, FieldMember>,
               &const_slot_of<SectionMember, FieldMember>, std::move(rule), doc};
}

// One row of the table. A macro only so that the YAML key is spelled once: it is the
// C++ member's name (the keys are a stable interface: docs/architecture.md), so no drift.
#define TESSERA_RECIPE_FIELD(section, key, rule, doc)                                  \
  make_field<&Recipe::section, &decltype(Recipe::section)::key>(#section, #key, rule, \
                                                                doc)

Rule any_value() { return Rule{}; }
Rule at_least(double min) {
  Rule r;
  r.min = min;
  return r;
}
Rule above(double min) {
  Rule r = at_least(min);
  r.min_exclusive = true;
  return r;
}
Rule in_range(double min, double max) {
  Rule r = at_least(min);
  r.max = max;
  return r;
}
Rule at_least_and_below(double min, double max) {
  Rule r = in_range(min, max);
  r.max_exclusive = true;
  return r;
}
Rule one_of(std::vector<std::string> words) {
  Rule r;
  r.choices = std::move(words);
  return r;
}
Rule one_of_or_path(std::vector<std::string> words) {
  Rule r = one_of(std::move(words));
  r.or_path = r.non_empty = true;
  return r;
}
Rule non_empty() {
  Rule r;
  r.non_empty = true;
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// THE TABLE. One row per recipe key, in the order they are written and documented.

const std::vector<Section>& sections() {
  static const std::vector<Section> table = {
      {"model", "the network: a GPT-2 style decoder-only transformer"},
      {"data", "token shards to train and validate on"},
      {"train", "the training loop: length, batch sizes, precision, evaluation"},
      {"optim", "AdamW and the learning-rate schedule (linear warm-up, then cosine decay)"},
      {"parallel", "how the processes split the work (world size = `dp * tp * pp`)"},
      {"checkpoint", "when and where checkpoints are written, and resuming from one"},
      {"log", "the run log (JSON lines)"},
      {"lora", "LoRA fine-tuning of a frozen base model (docs/lora.md)"},
      {"kernels", "which implementation of an op runs, where there is a choice"},
  };
  return table;
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      TESSERA_RECIPE_FIELD(model, family, one_of({"gpt2", "llama"}),
                           "model family: gpt2 (LayerNorm, learned positions, GELU MLP, tied "
                           "head) or llama (RMSNorm, rotary positions, SwiGLU MLP, grouped-query "
                           "attention, no biases; docs/llama.md)"),
      TESSERA_RECIPE_FIELD(model, n_layer, at_least(1), "number of transformer blocks"),
      TESSERA_RECIPE_FIELD(model, n_head, at_least(1),
                           "attention heads; model.n_embd must be divisible by it"),
      TESSERA_RECIPE_FIELD(model, n_embd, at_least(1), "model width (channels per token)"),
      TESSERA_RECIPE_FIELD(model, vocab_size, in_range(1, 65536),
                           "real vocabulary size V; every token id must be < V "
                           "(shards store tokens as 16-bit integers)"),
      TESSERA_RECIPE_FIELD(model, vocab_pad_to, at_least(1),
                           "the embedding gets V rounded up to a multiple of this many rows, "
                           "for faster matmuls (GPT-2: 128 pads 50257 to 50304)"),
      TESSERA_RECIPE_FIELD(model, seq_len, at_least(1),
                           "context length T: the longest sequence the model sees, and the "
                           "training sequence length"),
      TESSERA_RECIPE_FIELD(model, n_kv_head, at_least(0),
                           "llama: key/value heads of grouped-query attention, dividing "
                           "model.n_head; 0 means model.n_head (multi-head attention)"),
      TESSERA_RECIPE_FIELD(model, intermediate_size, at_least(0),
                           "llama: width of the SwiGLU MLP; 0 means Llama's rule, 2/3 of "
                           "4 n_embd rounded up to a multiple of 256"),
      TESSERA_RECIPE_FIELD(model, rope_theta, above(0),
                           "llama: base of the rotary position embedding's frequencies"),
      TESSERA_RECIPE_FIELD(model, norm_eps, above(0), "llama: epsilon of RMSNorm"),
      TESSERA_RECIPE_FIELD(model, tie_embeddings, any_value(),
                           "llama: the LM head shares the token embedding's weights (GPT-2 "
                           "always does)"),

      TESSERA_RECIPE_FIELD(data, train, any_value(),
                           "path or glob of llm.c token shards (`*.bin`) to train on; required"),
      TESSERA_RECIPE_FIELD(data, val, any_value(),
                           "path or glob of validation shards; empty = no validation"),

      TESSERA_RECIPE_FIELD(train, steps, at_least(1),
                           "optimizer steps of the whole run (the learning-rate schedule spans them)"),
      TESSERA_RECIPE_FIELD(train, exit_after_step, at_least(0),
                           "stop after this step, with a checkpoint, leaving the rest of "
                           "train.steps to a run with checkpoint.resume (0 = run to the end)"),
      TESSERA_RECIPE_FIELD(train, global_batch, at_least(1),
                           "sequences per optimizer step over all data-parallel ranks; "
                           "tokens per step = `global_batch * model.seq_len`"),
      TESSERA_RECIPE_FIELD(train, micro_batch, at_least(1),
                           "sequences per forward/backward on one rank; each rank accumulates "
                           "gradients over `global_batch / (parallel.dp * micro_batch)` of them"),
      TESSERA_RECIPE_FIELD(train, device, one_of({"cpu", "cuda"}),
                           "where the model trains: cpu, or cuda (one GPU per process, every "
                           "layout over NCCL; needs a build with the CUDA backend, "
                           "docs/cuda.md)"),
      TESSERA_RECIPE_FIELD(train, precision, one_of({"fp32", "bf16", "fp16"}),
                           "compute precision of the matmuls in forward/backward; weights, "
                           "gradients and AdamW state stay fp32 (docs/precision.md)"),
      TESSERA_RECIPE_FIELD(train, stochastic_rounding, any_value(),
                           "bf16: round the weights' bf16 compute copy stochastically "
                           "instead of to nearest"),
      TESSERA_RECIPE_FIELD(train, loss_scale, above(0),
                           "fp16: initial dynamic loss scale (halved on overflow)"),
      TESSERA_RECIPE_FIELD(train, loss_scale_window, at_least(1),
                           "fp16: steps without overflow after which the loss scale doubles"),
      TESSERA_RECIPE_FIELD(train, seed, any_value(),
                           "seeds weight initialisation and the data order"),
      TESSERA_RECIPE_FIELD(train, eval_every, at_least(0),
                           "validation loss every N steps (0 = never)"),
      TESSERA_RECIPE_FIELD(train, eval_batches, at_least(1),
                           "global batches of data.val per validation, read in order"),
      TESSERA_RECIPE_FIELD(train, sample_tokens, at_least(0),
                           "length of the greedy sample printed at the end (0 = none)"),

      TESSERA_RECIPE_FIELD(optim, lr, above(0), "peak learning rate, reached after warm-up"),
      TESSERA_RECIPE_FIELD(optim, min_lr, at_least(0),
                           "floor of the cosine decay, reached at the last step; <= optim.lr"),
      TESSERA_RECIPE_FIELD(optim, warmup_steps, at_least(0),
                           "steps of linear warm-up to optim.lr; <= train.steps"),
      TESSERA_RECIPE_FIELD(optim, weight_decay, at_least(0),
                           "decoupled (AdamW) weight decay, applied to weight matrices only"),
      TESSERA_RECIPE_FIELD(optim, decay_embeddings, any_value(),
                           "also apply weight decay to the token and position embeddings"),
      TESSERA_RECIPE_FIELD(optim, beta1, at_least_and_below(0, 1),
                           "AdamW decay rate of the first moment"),
      TESSERA_RECIPE_FIELD(optim, beta2, at_least_and_below(0, 1),
                           "AdamW decay rate of the second moment"),
      TESSERA_RECIPE_FIELD(optim, eps, above(0), "AdamW denominator epsilon"),
      TESSERA_RECIPE_FIELD(optim, grad_clip, at_least(0),
                           "clip the global gradient norm to this (0 = no clipping)"),

      TESSERA_RECIPE_FIELD(parallel, dp, at_least(1), "data-parallel ranks"),
      TESSERA_RECIPE_FIELD(parallel, tp, at_least(1),
                           "tensor-parallel ranks (Megatron): attention heads, MLP width and vocabulary "
                           "split across them; model.n_head and model.n_embd must be divisible by it"),
      TESSERA_RECIPE_FIELD(parallel, pp, at_least(1),
                           "pipeline stages: consecutive layers per stage, the first also holding "
                           "the embeddings, the last the final LayerNorm and the (tied) LM head"),
      TESSERA_RECIPE_FIELD(parallel, zero, in_range(0, 1),
                           "1 = shard AdamW state over dp ranks (ZeRO-1, see "
                           "docs/parallel.md)"),
      TESSERA_RECIPE_FIELD(parallel, schedule, one_of({"gpipe", "1f1b"}),
                           "pipeline schedule of a step's micro-batches: all forwards then all "
                           "backwards (gpipe), or one forward one backward (1f1b: activations of at "
                           "most pp micro-batches kept)"),
      TESSERA_RECIPE_FIELD(parallel, stage_layers, any_value(),
                           "layers of each pipeline stage, comma-separated (e.g. `3,1`); empty = "
                           "balanced (the first n_layer % pp stages get one more)"),
      TESSERA_RECIPE_FIELD(parallel, bucket_mb, above(0),
                           "size in MiB of the gradient buckets all-reduced during backward"),
      TESSERA_RECIPE_FIELD(parallel, grad_reduce, one_of({"fp32", "bf16"}),
                           "precision of the data-parallel gradient all-reduce: bf16 rounds "
                           "each rank's gradients and every partial sum to bf16 on the wire "
                           "(half the bytes; docs/parallel.md)"),
      TESSERA_RECIPE_FIELD(parallel, shared_memory, any_value(),
                           "when every data-parallel rank of a group is on one node, keep the "
                           "gradients in shared memory and sum them there directly, without "
                           "copies (docs/parallel.md); false = the ring over MPI messages"),
      TESSERA_RECIPE_FIELD(parallel, backend, one_of({"auto", "mpi", "nccl"}),
                           "the collectives of the dp, tp and pp groups: mpi (host memory), "
                           "nccl (GPU memory, one GPU per rank; docs/cuda.md), or auto = nccl "
                           "when train.device is cuda, else mpi"),
      TESSERA_RECIPE_FIELD(parallel, nccl_timeout_s, at_least(0),
                           "seconds an NCCL operation may stay unfinished before the run ends "
                           "with an error naming it (a rank missing, stuck, or busy that long "
                           "elsewhere, e.g. writing a checkpoint); 0 = no limit; docs/cuda.md"),

      TESSERA_RECIPE_FIELD(checkpoint, dir, non_empty(),
                           "directory that holds the `step_XXXXXX/` checkpoints"),
      TESSERA_RECIPE_FIELD(checkpoint, every, at_least(0),
                           "checkpoint every N steps (0 = only at the end)"),
      TESSERA_RECIPE_FIELD(checkpoint, keep_last, at_least(1),
                           "older complete checkpoints beyond this many are deleted"),
      TESSERA_RECIPE_FIELD(checkpoint, resume, one_of_or_path({"none", "auto"}),
                           "none = start fresh; auto = newest complete checkpoint in "
                           "checkpoint.dir if any; else the path of a checkpoint"),
      TESSERA_RECIPE_FIELD(checkpoint, async, any_value(),
                           "write checkpoints in the background while training goes on"),

      TESSERA_RECIPE_FIELD(log, dir, non_empty(), "run logs go to `<dir>/<run-id>/run.jsonl`"),
      TESSERA_RECIPE_FIELD(log, every, at_least(1), "a metric line every N steps"),
      TESSERA_RECIPE_FIELD(log, tensorboard, any_value(),
                           "TensorBoard event files of the metric and eval numbers beside run.jsonl"),

      TESSERA_RECIPE_FIELD(lora, rank, at_least(0),
                           "adapter rank r (0 = no LoRA: train every weight)"),
      TESSERA_RECIPE_FIELD(lora, alpha, above(0), "adapter outputs are scaled by alpha / r"),
      TESSERA_RECIPE_FIELD(lora, dropout, at_least_and_below(0, 1),
                           "dropout on the adapters' input while training"),
      TESSERA_RECIPE_FIELD(lora, targets, non_empty(),
                           "comma-separated layers that get adapters, or all (every linear "
                           "layer of a block): gpt2 qkv, attn_out, mlp_up, mlp_down; llama q, "
                           "k, v, attn_out, mlp_gate, mlp_up, mlp_down"),
      TESSERA_RECIPE_FIELD(lora, base, any_value(),
                           "checkpoint of the frozen base model; required when lora.rank > 0"),

      TESSERA_RECIPE_FIELD(kernels, attention, one_of({"auto", "own", "cudnn"}),
                           "attention on GPUs: own (our kernels: flash attention in bf16, else "
                           "the full one), cudnn (cuDNN's fused attention through its graph "
                           "API; needs train.device cuda, train.precision bf16 and model.family "
                           "gpt2; falls back to our flash kernel, saying why in one line, for a "
                           "shape cuDNN cannot build), or auto = own (deterministic: cuDNN's "
                           "backward adds up dq with atomics)"),
  };
  return table;
}

#undef TESSERA_RECIPE_FIELD

// ---------------------------------------------------------------------------------------
// Lookup and suggestions.

const Section* find_section(const std::string& name) {
  for (const Section& s : sections())
    if (s.name == name) return &s;
  return nullptr;
}

const Field* find_field(const std::string& section, const std::string& key) {
  for (const Field& f : fields())
    if (f.section == section && f.key == key) return &f;
  return nullptr;
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above_cell = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above_cell;
    }
  }
  return row[b.size()];
}

// The candidate closest to `word`, if it is close enough to be a plausible typo.
std::optional<std::string> closest(const std::string& word,
                                   const std::vector<std::string>& candidates) {
  const size_t limit = word.size() <= 3 ? 1 : 2;
  std::optional<std::string> best;
  size_t best_distance = limit + 1;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  return best;
}

std::string join(const std::vector<std::string>& words, const std::string& sep) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : sep) + w;
  return out;
}

// Where a bare key name lives, if it is a key of some section: "lr" -> "optim.lr".
std::optional<std::string> section_of_key(const std::string& key) {
  for (const Field& f : fields())
    if (f.key == key) return f.name();
  return std::nullopt;
}

}  // namespace

std::string unknown_key_hint(const std::string& section, const std::string& key) {
  std::vector<std::string> keys;
  for (const Field& f : fields())
    if (f.section == section) keys.push_back(f.key);
  std::string hint = " (known keys in " + section + ": " + join(keys, ", ") + ")";
  if (auto near = closest(key, keys)) {
    hint += "; did you mean '" + *near + "'?";
  } else if (auto elsewhere = section_of_key(key)) {
    hint += "; did you mean '" + *elsewhere + "'?";  // train.lr -> optim.lr
  }
  return hint;
}

std::string unknown_section_hint(const std::string& section) {
  std::vector<std::string> names;
  for (const Section& s : sections()) names.push_back(s.name);
  std::string hint = " (known sections: " + join(names, ", ") + ")";
  if (auto near = closest(section, names)) {
    hint += "; did you mean '" + *near + "'?";
  } else if (auto elsewhere = section_of_key(section)) {
    hint += "; did you mean '" + *elsewhere + "'?";  // a bare `steps:` -> train.steps
  }
  return hint;
}

// ---------------------------------------------------------------------------------------
// Describing what a field accepts.

namespace {

// Bounds print as integers when they are whole numbers ("1", not "1.0").
std::string bound_text(double x) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  (void)ec;  // 64 bytes always hold a double
  return std::string(buf, end);
}

// ">= 1", "> 0", "from 1 to 65536", ">= 0 and < 1"; empty if unbounded.
std::string bounds_text(const Rule& r) {
  if (r.min && r.max && !r.min_exclusive && !r.max_exclusive)
    return "from " + bound_text(*r.min) + " to " + bound_text(*r.max);
  std::string lower = r.min ? (r.min_exclusive ? "> " : ">= ") + bound_text(*r.min) : "";
  std::string upper = r.max ? (r.max_exclusive ? "< " : "<= ") + bound_text(*r.max) : "";
  if (!lower.empty() && !upper.empty()) return lower + " and " + upper;
  return lower + upper;
}

std::string quoted_list(const std::vector<std::string>& words) {
  std::vector<std::string> q;
  for (const std::string& w : words) q.push_back("'" + w + "'");
  return join(q, ", ");
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};

const Recipe kDefaults;  // only to ask a Field for its slot's C++ type

// A Slot's pointer type, independent of constness, for messages and docs.
enum class Kind { Int, UInt, Double, Bool, String };
Kind kind_of(const Field& f) {
  return std::visit(Overloaded{[](const int*) { return Kind::Int; },
                               [](const int64_t*) { return Kind::Int; },
                               [](const uint64_t*) { return Kind::UInt; },
                               [](const double*) { return Kind::Double; },
                               [](const bool*) { return Kind::Bool; },
                               [](const std::string*) { return Kind::String; },
                               [](const auto*) { return Kind::String; }},  // enums
                    f.const_slot(kDefaults));
}

}  // namespace

std::string type_name(const Field& field) {
  switch (kind_of(field)) {
    case Kind::Int:
    case Kind::UInt: return "integer";
    case Kind::Double: return "number";
    case Kind::Bool: return "boolean";
    case Kind::String: return "string";
  }
  return "?";
}

std::string expectation(const Field& field) {
  const Rule& r = field.rule;
  switch (kind_of(field)) {
    case Kind::Int:
    case Kind::UInt: {
      std::string b = bounds_text(r);
      if (b.empty() && kind_of(field) == Kind::UInt) b = ">= 0";
      return b.empty() ? "an integer" : "an integer " + b;
    }
    case Kind::Double: {
      std::string b = bounds_text(r);
      return b.empty() ? "a number" : "a number " + b;
    }
    case Kind::Bool: return "true or false";
    case Kind::String:
      if (r.or_path) return "one of " + quoted_list(r.choices) + " or a path";
      if (!r.choices.empty()) return "one of " + quoted_list(r.choices);
      return r.non_empty ? "a non-empty string" : "a string";
  }
  return "?";
}

std::string allowed_values(const Field& field) {
  const Rule& r = field.rule;
  switch (kind_of(field)) {
    case Kind::Int:
    case Kind::Double: return bounds_text(r).empty() ? "any" : bounds_text(r);
    case Kind::UInt: return bounds_text(r).empty() ? ">= 0" : bounds_text(r);
    case Kind::Bool: return "true, false";
    case Kind::String:
      if (r.or_path) return join(r.choices, ", ") + ", or a path";
      if (!r.choices.empty()) return join(r.choices, ", ");
      return r.non_empty ? "non-empty" : "any";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------
// Parsing, checking and printing values.

namespace {

// Whole-string integer / floating-point parses; YAML allows a leading '+'.
template <class T>
std::optional<T> parse_number(std::string text, bool& out_of_range) {
  out_of_range = false;
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.erase(0, 1);
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) out_of_range = true;
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    return std::nullopt;
  return value;
}

std::optional<bool> parse_bool(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  // The YAML 1.1 spellings that yaml-cpp itself accepts as booleans.
  if (text == "true" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "no" || text == "off") return false;
  return std::nullopt;
}

bool within(const Rule& r, double x) {
  if (r.min && (r.min_exclusive ? x <= *r.min : x < *r.min)) return false;
  if (r.max && (r.max_exclusive ? x >= *r.max : x > *r.max)) return false;
  return true;
}

std::string expected(const Field& f, const std::string& got) {
  return "expected " + expectation(f) + ", got " + got;
}

// The rule check on a typed value, shared by set_field (parsed values) and check_field
// (values set in code). `shown` is how the value prints in the message.
std::string check_number(const Field& f, double x, const std::string& shown) {
  return within(f.rule, x) ? "" : expected(f, shown);
}

std::string check_string(const Field& f, const std::string& s) {
  const Rule& r = f.rule;
  if (s.empty()) return r.non_empty || !r.choices.empty() ? expected(f, "an empty string") : "";
  if (r.choices.empty() || r.or_path ||
      std::find(r.choices.begin(), r.choices.end(), s) != r.choices.end())
    return "";
  std::string message = expected(f, "'" + s + "'");
  if (auto near = closest(s, r.choices)) message += "; did you mean '" + *near + "'?";
  return message;
}

// Integers are parsed as 64-bit and then checked against the field's C++ type, so an
// `int` key given 3000000000 says so instead of wrapping around.
template <class T>
std::string set_integer(const Field& f, T* slot, const std::string& text) {
  using Wide = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;
  bool out_of_range = false;
  std::optional<Wide> v = parse_number<Wide>(text, out_of_range);
  if (!v && !out_of_range) return expected(f, "'" + text + "'");
  if (!v || *v < std::numeric_limits<T>::min() || *v > std::numeric_limits<T>::max())
    return expected(f, text) + " (does not fit in a " + std::to_string(8 * sizeof(T)) +
           "-bit integer)";
  if (std::string e = check_number(f, static_cast<double>(*v), text); !e.empty()) return e;
  *slot = static_cast<T>(*v);
  return "";
}

}  // namespace

std::string set_field(const Field& field, Recipe& recipe, const std::string& text,
                      bool is_null) {
  // YAML `key:` with no value (or `~`, `null`) means "empty" for strings and is an error
  // for anything else.
  if (is_null && kind_of(field) != Kind::String) return expected(field, "nothing");
  return std::visit(
      Overloaded{
          [&](int* p) { return set_integer(field, p, text); },
          [&](int64_t* p) { return set_integer(field, p, text); },
          [&](uint64_t* p) { return set_integer(field, p, text); },
          [&](double* p) -> std::string {
            bool out_of_range = false;
            std::optional<double> v = parse_number<double>(text, out_of_range);
            if (!v || !std::isfinite(*v)) return expected(field, "'" + text + "'");
            if (std::string e = check_number(field, *v, text); !e.empty()) return e;
            *p = *v;
            return "";
          },
          [&](bool* p) -> std::string {
            std::optional<bool> v = parse_bool(text);
            if (!v) return expected(field, "'" + text + "'");
            *p = *v;
            return "";
          },
          [&](std::string* p) -> std::string {
            std::string s = is_null ? "" : text;
            if (std::string e = check_string(field, s); !e.empty()) return e;
            *p = s;
            return "";
          },
          [&](auto* p) -> std::string {  // enums: the Rule's choices are their words
            const std::string s = is_null ? "" : text;
            if (std::string e = check_string(field, s); !e.empty()) return e;
            if (!from_string(s, *p)) return expected(field, "'" + s + "'");
            return "";
          }},
      field.slot(recipe));
}

std::string check_field(const Field& field, const Recipe& recipe) {
  return std::visit(Overloaded{[&](const bool*) { return std::string(); },
                               [&](const std::string* p) { return check_string(field, *p); },
                               [&](const auto* p) {
                                 if constexpr (std::is_enum_v<std::remove_cvref_t<decltype(*p)>>)
                                   return std::string();  // an enum holds a valid word
                                 else
                                   return check_number(field, static_cast<double>(*p),
                                                       value_text(field, recipe));
                               }},
                    field.const_slot(recipe));
}

std::string value_text(const Field& field, const Recipe& recipe) {
  return std::visit(
      Overloaded{[](const bool* p) { return std::string(*p ? "true" : "false"); },
                 [](const std::string* p) { return *p; },
                 [](const double* p) {
                   // Shortest text that parses back to the same double.
                   char buf[64];
                   auto [end, ec] = std::to_chars(buf, buf + sizeof buf, *p);
                   (void)ec;
                   std::string s(buf, end);
                   // Whole numbers get ".0" so that readers of the YAML see a number
                   // type, not a count: "grad_clip: 1.0".
                   if (s.find_first_not_of("-0123456789") == std::string::npos) s += ".0";
                   return s;
                 },
                 [](const auto* p) {
                   if constexpr (std::is_enum_v<std::remove_cvref_t<decltype(*p)>>)
                     return std::string(to_string(*p));
                   else
                     return std::to_string(*p);
                 }},
      field.const_slot(recipe));
}

}  // namespace tessera::recipe_detail
