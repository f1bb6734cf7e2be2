// Recipes: YAML file -> overrides -> validated Recipe, and back to YAML.
//
// All per-key knowledge (names, types, allowed values, docs) is in the table of
// recipe_fields.cpp; this file walks the YAML document and the `--set` strings over it,
// and holds the checks that involve more than one key.
#include "framework/recipe/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>

#include "framework/recipe/recipe_fields.h"
#include "base/error.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

const char* to_string(Precision p) { return kernels::dtype_name(p); }

const char* to_string(GradReduce g) { return g == GradReduce::bf16 ? "bf16" : "fp32"; }

const char* to_string(CommBackend b) {
  return b == CommBackend::nccl ? "nccl" : b == CommBackend::mpi ? "mpi" : "auto";
}

const char* to_string(AttentionEngine e) {
  return e == AttentionEngine::cudnn ? "cudnn" : e == AttentionEngine::own ? "own" : "auto";
}

CommBackend resolved_backend(const ParallelConfig& parallel, Device device) {
  if (parallel.backend != CommBackend::auto_) return parallel.backend;
  return device == Device::cuda ? CommBackend::nccl : CommBackend::mpi;
}

const char* to_string(PipelineSchedule s) {
  return s == PipelineSchedule::GPipe ? "gpipe" : "1f1b";
}

namespace {
template <class E>
bool enum_from_string(const std::string& word, E& out, std::initializer_list<E> values) {
  for (E e : values)
    if (word == to_string(e)) return out = e, true;
  return false;
}
}  // namespace

bool from_string(const std::string& word, Precision& out) {
  return enum_from_string(word, out, {Precision::fp32, Precision::bf16, Precision::fp16});
}
bool from_string(const std::string& word, Device& out) {
  return enum_from_string(word, out, {Device::cpu, Device::cuda});
}
bool from_string(const std::string& word, GradReduce& out) {
  return enum_from_string(word, out, {GradReduce::fp32, GradReduce::bf16});
}
bool from_string(const std::string& word, CommBackend& out) {
  return enum_from_string(word, out, {CommBackend::auto_, CommBackend::mpi, CommBackend::nccl});
}
bool from_string(const std::string& word, AttentionEngine& out) {
  return enum_from_string(word, out,
                          {AttentionEngine::auto_, AttentionEngine::own, AttentionEngine::cudnn});
}
bool from_string(const std::string& word, PipelineSchedule& out) {
  return enum_from_string(word, out, {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB});
}

namespace {

using namespace recipe_detail;

// "recipes/tiny.yaml:7:3: " when yaml-cpp knows the position, else "recipes/tiny.yaml: ".
// yaml-cpp counts lines and columns from 0; editors and compilers count from 1.
std::string where(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source + ": ";
  return source + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1) +
         ": ";
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    default: return "'" + node.Scalar() + "'";
  }
}

// Puts one YAML value (a scalar, or nothing) into the field. Returns what was wrong with
// it, without the location, or "" on success.
std::string assign_node(const Field& field, const YAML::Node& value, Recipe& recipe) {
  if (value.IsMap() || value.IsSequence())
    return "expected " + expectation(field) + ", got " + describe_node(value);
  return set_field(field, recipe, value.IsNull() ? "" : value.Scalar(), value.IsNull());
}

// Remembers where each name was first seen, so that a repeated key is an error rather
// than a silent "last one wins" (yaml-cpp keeps both).
class SeenNames {
 public:
  SeenNames(const std::string& source, const char* what) : source_(source), what_(what) {}
  void add(const std::string& name, const YAML::Mark& mark) {
    auto [it, fresh] = first_.emplace(name, mark);
    if (!fresh)
      throw Error(where(source_, mark) + "duplicate " + what_ + " '" + name +
                  "' (first at line " + std::to_string(it->second.line + 1) + ")");
  }

 private:
  const std::string& source_;
  const char* what_;
  std::map<std::string, YAML::Mark> first_;
};

std::string key_name(const YAML::Node& key, const std::string& source) {
  if (!key.IsScalar())
    throw Error(where(source, key.Mark()) + "expected a key name, got " + describe_node(key));
  return key.Scalar();
}

// Reads a section's `key: value` lines.
void apply_section(const std::string& section, const YAML::Node& body, Recipe& recipe) {
  SeenNames seen(recipe.source, "key");
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string key = key_name(it->first, recipe.source);
    const Field* field = find_field(section, key);
    if (!field)
      throw Error(where(recipe.source, it->first.Mark()) + "unknown key '" + section + "." +
                  key + "'" + unknown_key_hint(section, key));
    seen.add(field->name(), it->first.Mark());
    // A missing value (`steps:`) has its mark on the next line; point at the key instead.
    const YAML::Mark mark = it->second.IsNull() ? it->first.Mark() : it->second.Mark();
    std::string problem = assign_node(*field, it->second, recipe);
    if (!problem.empty())
      throw Error(where(recipe.source, mark) + field->name() + ": " + problem);
  }
}

// Reads the whole document: a mapping of sections, each a mapping of keys.
void apply_document(const YAML::Node& root, Recipe& recipe) {
  if (root.IsNull()) return;  // empty file: all defaults
  if (!root.IsMap())
    throw Error(where(recipe.source, root.Mark()) +
                "expected a mapping of sections (model:, data:, train:, ...) at the top "
                "level, got " +
                describe_node(root));
  SeenNames seen(recipe.source, "section");
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string name = key_name(it->first, recipe.source);
    if (!find_section(name))
      throw Error(where(recipe.source, it->first.Mark()) + "unknown section '" + name + "'" +
                  unknown_section_hint(name));
    seen.add(name, it->first.Mark());
    const YAML::Node body = it->second;
    if (body.IsNull()) continue;  // `log:` with nothing under it keeps the defaults
    if (!body.IsMap())
      throw Error(where(recipe.source, body.Mark()) + name +
                  ": expected a mapping of keys (e.g. 'key: value' lines indented under '" +
                  name + ":'), got " + describe_node(body));
    apply_section(name, body, recipe);
  }
}

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  size_t begin = s.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(space) - begin + 1);
}

// Applies one `section.key=value` string, as given to `--set`.
void apply_override(const std::string& assignment, Recipe& recipe) {
  const std::string prefix = recipe.source + ": --set ";
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos)
    throw Error(prefix + "'" + assignment +
                "': missing '=' (expected section.key=value, e.g. train.steps=20)");
  const std::string name = trim(assignment.substr(0, eq));
  const std::string value_text = assignment.substr(eq + 1);

  const size_t dot = name.find('.');
  if (dot == std::string::npos)
    throw Error(prefix + name + ": expected section.key=value" + unknown_section_hint(name));
  const std::string section = name.substr(0, dot), key = name.substr(dot + 1);
  if (!find_section(section))
    throw Error(prefix + name + ": unknown section '" + section + "'" +
                unknown_section_hint(section));
  const Field* field = find_field(section, key);
  if (!field)
    throw Error(prefix + name + ": unknown key '" + name + "'" + unknown_key_hint(section, key));

  // The value is a YAML scalar, so `--set` reads values exactly as the file does
  // ("3e-4", "true", "~"). Text that is not valid YAML on its own, like the glob
  // `*.bin` (YAML reads `*` as an alias), is taken as the literal string.
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(value_text);
  }
  std::string problem = assign_node(*field, value, recipe);
  if (!problem.empty()) throw Error(prefix + field->name() + ": " + problem);
}

// The current value of a key, for cross-field messages.
std::string shown(const Recipe& recipe, const char* section, const char* key) {
  return value_text(*find_field(section, key), recipe);
}


std::string read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open recipe file (" + std::strerror(errno) + ")");
  std::string text;
  char buf[1 << 14];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  // A directory opens fine on Linux and fails only when read (EISDIR).
  const bool failed = std::ferror(f);
  const int err = errno;
  std::fclose(f);
  if (failed) throw Error(path + ": cannot read recipe file (" + std::strerror(err) + ")");
  return text;
}

// A table cell: a '|' in the text would end the cell.
std::string markdown_cell(const std::string& text) {
  std::string cell;
  for (char c : text) {
    if (c == '|') cell += '\\';
    cell += c;
  }
  return cell;
}

}  // namespace

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_recipe(read_file(path), path, overrides);
}

Recipe parse_recipe(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Recipe recipe;
  recipe.source = source;
  // Every fault found here is a function of the text and the overrides, which every rank
  // of a job shares: a ConfigError, printed once (base/error.h).
  try {
    try {
      apply_document(YAML::Load(yaml_text), recipe);
    } catch (const YAML::Exception& e) {
      // Malformed YAML (and anything else yaml-cpp objects to): name the file and position.
      throw Error(where(source, e.mark) + "malformed YAML: " + e.msg);
    }
    for (const std::string& assignment : overrides) apply_override(assignment, recipe);
    validate_recipe(recipe);
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  return recipe;
}

std::string recipe_to_yaml(const Recipe& recipe) {
  YAML::Emitter out;
  out << YAML::Comment("resolved recipe, read from " + recipe.source) << YAML::Newline;
  out << YAML::BeginMap;
  for (const Section& section : sections()) {
    out << YAML::Key << section.name << YAML::Value << YAML::BeginMap;
    for (const Field& field : fields()) {
      if (field.section != section.name) continue;
      out << YAML::Key << field.key << YAML::Value;
      // Strings are always quoted, so that a path like `no` or `123` stays a string for
      // any YAML reader; numbers and booleans are written as their plain scalars.
      if (type_name(field) == "string") out << YAML::DoubleQuoted;
      out << value_text(field, recipe);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string recipe_value(const Recipe& recipe, const std::string& name) {
  const size_t dot = name.find('.');
  const std::string section = name.substr(0, dot);
  if (dot == std::string::npos || !find_section(section))
    throw Error("no recipe key '" + name + "': expected section.key" +
                unknown_section_hint(section));
  const std::string key = name.substr(dot + 1);
  const Field* field = find_field(section, key);
  if (!field) throw Error("no recipe key '" + name + "'" + unknown_key_hint(section, key));
  return value_text(*field, recipe);
}

void validate_recipe(const Recipe& recipe) {
  auto fail_unless = [&](bool ok, const std::string& message) {
    if (!ok) throw ConfigError(recipe.source + ": " + message);
  };

  // Each key on its own again: a Recipe built in code never went through the parser.
  for (const Field& field : fields()) {
    std::string problem = check_field(field, recipe);
    fail_unless(problem.empty(), field.name() + ": " + problem);
  }

  // Constraints between keys.
  const Recipe& r = recipe;
  fail_unless(!r.data.train.empty(),
              "data.train is empty: set it to a path or glob of token shards, e.g. "
              "--set data.train=data/tiny/train_*.bin");
  fail_unless(r.model.n_embd % r.model.n_head == 0,
              "model.n_embd " + shown(r, "model", "n_embd") +
                  " is not divisible by model.n_head " + shown(r, "model", "n_head"));
  if (r.model.family == "llama") {
    const int kv = r.model.n_kv_head == 0 ? r.model.n_head : r.model.n_kv_head;
    fail_unless(r.model.n_head % kv == 0, "model.n_kv_head " + shown(r, "model", "n_kv_head") +
                                              " does not divide model.n_head " +
                                              shown(r, "model", "n_head"));
    fail_unless((r.model.n_embd / r.model.n_head) % 2 == 0,
                "llama: the head size model.n_embd / model.n_head = " +
                    std::to_string(r.model.n_embd / r.model.n_head) +
                    " is odd; rotary embeddings rotate pairs of channels");
  } else {
    const ModelConfig defaults;
    auto unset = [&](bool is_default, const char* key) {
      fail_unless(is_default, std::string("model.") + key + " " + shown(r, "model", key) +
                                  " is a llama key: model.family is " + r.model.family);
    };
    unset(r.model.n_kv_head == defaults.n_kv_head, "n_kv_head");
    unset(r.model.intermediate_size == defaults.intermediate_size, "intermediate_size");
    unset(r.model.rope_theta == defaults.rope_theta, "rope_theta");
    unset(r.model.norm_eps == defaults.norm_eps, "norm_eps");
    unset(r.model.tie_embeddings == defaults.tie_embeddings, "tie_embeddings");
  }
  // global_batch splits evenly over dp ranks, and each rank's share into micro-batches.
  const int64_t per_step = int64_t{r.parallel.dp} * r.train.micro_batch;
  fail_unless(r.train.global_batch % per_step == 0,
              "train.global_batch " + shown(r, "train", "global_batch") +
                  " is not divisible by parallel.dp * train.micro_batch = " +
                  std::to_string(per_step) + " (" + shown(r, "parallel", "dp") + " * " +
                  shown(r, "train", "micro_batch") + ")");
  fail_unless(r.optim.min_lr <= r.optim.lr, "optim.min_lr " + shown(r, "optim", "min_lr") +
                                                " is larger than optim.lr " +
                                                shown(r, "optim", "lr"));
  fail_unless(r.optim.warmup_steps <= r.train.steps,
              "optim.warmup_steps " + shown(r, "optim", "warmup_steps") +
                  " is larger than train.steps " + shown(r, "train", "steps"));

  if (!r.parallel.stage_layers.empty()) pipeline_stage_layers(r);
  fail_unless(r.parallel.zero == 0 || r.parallel.grad_reduce == GradReduce::fp32,
              "parallel.grad_reduce bf16 is not supported with parallel.zero 1 (ZeRO-1 "
              "reduce-scatters in fp32): set parallel.grad_reduce=fp32 or parallel.zero=0");
  fail_unless(r.parallel.backend != CommBackend::nccl || r.train.device == Device::cuda,
              "parallel.backend nccl runs the collectives on GPU memory: it needs train.device "
              "cuda, not " + shown(r, "train", "device"));
  fail_unless(!r.train.stochastic_rounding || r.train.precision == Precision::bf16,
              "train.stochastic_rounding is for train.precision bf16, not " +
                  shown(r, "train", "precision"));
  if (r.kernels.attention == AttentionEngine::cudnn) {
    auto need = [&](bool ok, const char* section, const char* key, const char* wanted,
                    const char* why) {
      fail_unless(ok, std::string("kernels.attention cudnn needs ") + section + "." + key + " " +
                          wanted + ", not " + shown(r, section, key) + " (" + why + ")");
    };
    need(r.train.device == Device::cuda, "train", "device", "cuda", "cuDNN runs on GPUs");
    need(r.train.precision == Precision::bf16, "train", "precision", "bf16",
         "cuDNN's attention and our flash kernel, its fallback, compute in bf16");
    need(r.model.family == "gpt2", "model", "family", "gpt2",
         "llama's grouped-query attention has our own kernel only");
  }
  if (r.lora.rank > 0) {
    lora_targets(r);
    fail_unless(!r.lora.base.empty(),
                "lora.base is empty: a LoRA run (lora.rank " + shown(r, "lora", "rank") +
                    ") fine-tunes a base model; set it to that model's checkpoint");
  }
}

std::vector<int> pipeline_stage_layers(const Recipe& r) {
  std::vector<int> listed;
  const std::string& text = r.parallel.stage_layers;
  size_t pos = 0;
  while (!text.empty() && pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    int value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size())
      throw ConfigError(r.source + ": parallel.stage_layers: expected layer counts separated by "
                  "commas, such as '3,1', got '" + text + "'");
    listed.push_back(value);
    pos = comma + 1;
  }
  try {
    return stage_layer_counts(r.model.n_layer, r.parallel.pp, listed);
  } catch (const Error& e) {
    throw ConfigError(r.source + ": " + e.what());
  }
}

std::string recipe_reference_markdown() {
  const Recipe defaults;
  std::string md;
  for (const Section& section : sections()) {
    md += "### " + section.name + "\n\n" + markdown_cell(section.doc) + ".\n\n";
    md += "| key | type | default | allowed | description |\n";
    md += "|---|---|---|---|---|\n";
    for (const Field& field : fields()) {
      if (field.section != section.name) continue;
      std::string value = value_text(field, defaults);
      md += "| `" + field.name() + "` | " + type_name(field) + " | " +
            (value.empty() ? "`\"\"`" : "`" + value + "`") + " | " +
            markdown_cell(allowed_values(field)) + " | " + markdown_cell(field.doc) + " |\n";
    }
    md += "\n";
  }
  return md;
}

}  // namespace tessera
