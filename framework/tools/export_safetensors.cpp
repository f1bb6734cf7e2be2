// safetensors + config.json for Hugging Face transformers' GPT2LMHeadModel or
// LlamaForCausalLM (docs/export.md, docs/llama.md).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "base/error.h"
#include "checkpoint/safetensors.h"
#include "framework/data/prepare.h"
#include "framework/model/gpt_model.h"
#include "framework/tools/export_formats.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

// One tensor of the exported model: its name and shape there, and where it comes from.
struct TensorMapping {
  std::string target;                // the name in the exported file
  std::string source;                // Tessera's parameter
  bool transpose = false;            // stored [in, out] there, [out, in] here
};

// GPT2LMHeadModel's names. Its Conv1D layers (c_attn, c_proj, c_fc) keep weights as
// [in, out], the transpose of Tessera's nn.Linear-style [out, in]; the LM head is tied to
// wte and not stored.
std::vector<TensorMapping> hugging_face_gpt2(int n_layer) {
  std::vector<TensorMapping> m = {{"transformer.wte.weight", "wte.weight"},
                                  {"transformer.wpe.weight", "wpe.weight"}};
  for (int l = 0; l < n_layer; l++) {
    const std::string h = "h." + std::to_string(l) + ".", hf = "transformer." + h;
    for (const auto& [to, from, t] : std::vector<std::tuple<std::string, std::string, bool>>{
             {"ln_1.weight", "ln_1.weight", false}, {"ln_1.bias", "ln_1.bias", false},
             {"attn.c_attn.weight", "attn.qkv.weight", true}, {"attn.c_attn.bias", "attn.qkv.bias", false},
             {"attn.c_proj.weight", "attn.proj.weight", true}, {"attn.c_proj.bias", "attn.proj.bias", false},
             {"ln_2.weight", "ln_2.weight", false}, {"ln_2.bias", "ln_2.bias", false},
             {"mlp.c_fc.weight", "mlp.up.weight", true}, {"mlp.c_fc.bias", "mlp.up.bias", false},
             {"mlp.c_proj.weight", "mlp.down.weight", true}, {"mlp.c_proj.bias", "mlp.down.bias", false}})
      m.push_back({hf + to, h + from, t});
  }
  m.push_back({"transformer.ln_f.weight", "ln_f.weight"});
  m.push_back({"transformer.ln_f.bias", "ln_f.bias"});
  return m;
}

// LlamaForCausalLM's names. Its nn.Linear layers store [out, in] as Tessera does, and its
// rotary embedding is the same rotate-half form: every tensor as it is. A tied LM head is
// not stored (tie_word_embeddings).
std::vector<TensorMapping> hugging_face_llama(int n_layer, bool tied) {
  std::vector<TensorMapping> m = {{"model.embed_tokens.weight", "tok_embeddings.weight"}};
  for (int l = 0; l < n_layer; l++) {
    const std::string h = "h." + std::to_string(l) + ".", hf = "model.layers." + std::to_string(l) + ".";
    for (const auto& [to, from] : std::vector<std::pair<std::string, std::string>>{
             {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn.q"},
             {"self_attn.k_proj", "attn.k"}, {"self_attn.v_proj", "attn.v"},
             {"self_attn.o_proj", "attn.o"}, {"post_attention_layernorm", "mlp_norm"},
             {"mlp.gate_proj", "mlp.gate"}, {"mlp.up_proj", "mlp.up"}, {"mlp.down_proj", "mlp.down"}})
      m.push_back({hf + to + ".weight", h + from + ".weight"});
  }
  m.push_back({"model.norm.weight", "norm.weight"});
  if (!tied) m.push_back({"lm_head.weight", "lm_head.weight"});
  return m;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) throw Error("cannot write " + path.string());
}

void copy_file(const std::string& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error("cannot copy " + from + " to " + to.string() + ": " + ec.message());
}

// config.json: every field GPT2LMHeadModel's GPT2Config reads, with the values that make
// its forward pass Tessera's (GELU's tanh form, LayerNorm eps 1e-5, no dropout at export).
nlohmann::ordered_json hugging_face_config(const Recipe& r, int eot, const std::string& torch_dtype) {
  const ModelConfig& m = r.model;
  nlohmann::ordered_json c;
  c["architectures"] = {"GPT2LMHeadModel"};
  c["model_type"] = "gpt2";
  c["vocab_size"] = m.vocab_size;
  c["n_positions"] = m.seq_len;
  c["n_ctx"] = m.seq_len;
  c["n_embd"] = m.n_embd;
  c["n_layer"] = m.n_layer;
  c["n_head"] = m.n_head;
  c["n_inner"] = nullptr;  // 4 * n_embd
  c["activation_function"] = "gelu_new";
  c["resid_pdrop"] = 0.0;
  c["embd_pdrop"] = 0.0;
  c["attn_pdrop"] = 0.0;
  c["layer_norm_epsilon"] = 1e-5;
  c["initializer_range"] = 0.02;
  c["scale_attn_weights"] = true;
  c["scale_attn_by_inverse_layer_idx"] = false;
  c["reorder_and_upcast_attn"] = false;
  c["summary_type"] = "cls_index";
  c["summary_use_proj"] = true;
  c["summary_activation"] = nullptr;
  c["summary_proj_to_labels"] = true;
  c["summary_first_dropout"] = 0.0;
  c["tie_word_embeddings"] = true;
  c["use_cache"] = true;
  c["bos_token_id"] = eot >= 0 ? nlohmann::ordered_json(eot) : nlohmann::ordered_json();
  c["eos_token_id"] = eot >= 0 ? nlohmann::ordered_json(eot) : nlohmann::ordered_json();
  c["torch_dtype"] = torch_dtype;
  return c;
}

// config.json for LlamaForCausalLM: the fields of its LlamaConfig that decide the forward
// pass, with Tessera's values (SiLU, no attention or MLP biases, default rope scaling).
nlohmann::ordered_json hugging_face_llama_config(const Recipe& r, int eot,
                                                 const std::string& torch_dtype) {
  const ModelConfig& m = r.model;
  const GPTConfig g = GPTConfig::from_recipe(m);
  nlohmann::ordered_json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c["vocab_size"] = m.vocab_size;
  c["hidden_size"] = m.n_embd;
  c["intermediate_size"] = g.mlp_width();
  c["num_hidden_layers"] = m.n_layer;
  c["num_attention_heads"] = m.n_head;
  c["num_key_value_heads"] = g.kv_heads();
  c["head_dim"] = g.head_size();
  c["hidden_act"] = "silu";
  c["max_position_embeddings"] = m.seq_len;
  c["rms_norm_eps"] = m.norm_eps;
  c["rope_theta"] = m.rope_theta;
  c["rope_scaling"] = nullptr;
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["initializer_range"] = 0.02;
  c["tie_word_embeddings"] = g.tied();
  c["use_cache"] = true;
  c["bos_token_id"] = eot >= 0 ? nlohmann::ordered_json(eot) : nlohmann::ordered_json();
  c["eos_token_id"] = eot >= 0 ? nlohmann::ordered_json(eot) : nlohmann::ordered_json();
  c["torch_dtype"] = torch_dtype;
  return c;
}

// Groups consecutive tensors into files of at most max_bytes (a larger tensor alone).
std::vector<std::vector<size_t>> plan_shards(const std::vector<SafetensorsEntry>& entries, int64_t max_bytes) {
  std::vector<std::vector<size_t>> shards(1);
  int64_t bytes = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    const int64_t b = safetensors_entry_bytes(entries[i]);
    if (!shards.back().empty() && bytes + b > max_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(i);
    bytes += b;
  }
  return shards;
}

std::string shard_file_name(size_t k, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, n);
  return buf;
}

}  // namespace

int64_t write_safetensors_export(CheckpointWeights& weights, ExportDtype export_dtype,
                                 int64_t max_shard_bytes, const std::string& out_dir) {
  const Recipe& r = weights.recipe();
  const fs::path dir(out_dir);
  check(export_dtype != ExportDtype::q8_0,
        "tessera export: --dtype q8_0 is a GGUF type; safetensors holds f32, f16 or bf16");
  const std::string dtype = export_dtype == ExportDtype::f32 ? "F32" : export_dtype == ExportDtype::f16 ? "F16" : "BF16";
  const bool llama = r.model.family == "llama";
  const std::vector<TensorMapping> mapping =
      llama ? hugging_face_llama(r.model.n_layer, GPTConfig::from_recipe(r.model).tied())
            : hugging_face_gpt2(r.model.n_layer);
  std::vector<SafetensorsEntry> entries;
  for (const TensorMapping& t : mapping) {
    std::vector<int64_t> shape = weights.shape(t.source);
    if (t.transpose) std::swap(shape[0], shape[1]);
    entries.push_back({t.target, dtype, shape});
  }
  const auto shards = plan_shards(entries, max_shard_bytes);
  nlohmann::ordered_json weight_map;
  int64_t total = 0;
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"tessera_checkpoint", weights.checkpoint().path},
      {"tessera_run_id", weights.checkpoint().meta.run_id},
      {"tessera_step", std::to_string(weights.checkpoint().meta.step)}};
  for (size_t k = 0; k < shards.size(); k++) {
    const std::string file = shard_file_name(k, shards.size());
    std::vector<SafetensorsEntry> these;
    for (size_t i : shards[k]) these.push_back(entries[i]);
    SafetensorsWriter writer((dir / file).string(), these, metadata);
    for (size_t i : shards[k]) {
      const TensorMapping& t = mapping[i];
      std::vector<float> values = weights.read(t.source);
      if (t.transpose) {
        const std::vector<int64_t> s = weights.shape(t.source);
        values = transposed(values, s[0], s[1]);
      }
      write_encoded(values, export_dtype, [&](const void* data, int64_t bytes) {
        writer.write_next(data, bytes);
        total += bytes;
      });
      weight_map[t.target] = file;
    }
    writer.finish();
  }
  if (shards.size() > 1)
    write_text(dir / "model.safetensors.index.json",
               nlohmann::ordered_json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n");

  const TokenizerFiles tok = model_tokenizer(weights);
  const int eot = tok.kind == "gpt2" ? 50256 : -1;
  const std::string torch_dtype = dtype == "F32" ? "float32" : dtype == "F16" ? "float16" : "bfloat16";
  write_text(dir / "config.json", (llama ? hugging_face_llama_config(r, eot, torch_dtype)
                                         : hugging_face_config(r, eot, torch_dtype))
                                            .dump(2) + "\n");
  if (tok.kind == "gpt2") {  // GPT2Tokenizer's files: the same two files under HF's names
    copy_file(tok.encoder, dir / "vocab.json");
    copy_file(tok.merges, dir / "merges.txt");
    write_text(dir / "tokenizer_config.json",
               nlohmann::ordered_json{{"tokenizer_class", "GPT2Tokenizer"},
                                      {"model_max_length", r.model.seq_len},
                                      {"bos_token", "<|endoftext|>"},
                                      {"eos_token", "<|endoftext|>"},
                                      {"unk_token", "<|endoftext|>"},
                                      {"add_prefix_space", false}}
                       .dump(2) + "\n");
  }
  return (int64_t)mapping.size();
}

}  // namespace tessera
