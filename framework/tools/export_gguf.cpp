// One GGUF file for llama.cpp, architecture gpt2 or llama (docs/export.md): its metadata
// keys with the types llama.cpp's loader checks, the tokenizer inside, and the weights.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "checkpoint/gguf.h"
#include "framework/data/prepare.h"
#include "framework/data/tokenizer.h"
#include "framework/model/gpt_model.h"
#include "framework/tools/export_formats.h"

namespace tessera {

namespace {

// llama.cpp's gpt2 tensor names. Its matrices are Tessera's [out, in] row-major as they
// are (ggml's ne = {in, out}), q, k, v in the same order: no transposes. The LM head
// (output.weight) is required although GPT-2 ties it to token_embd.
struct GgufMapping {
  std::string target, source;
  int rope_heads = 0;  // > 0: q or k rows of that many heads, permuted to llama.cpp's rotary form
};

std::vector<GgufMapping> llama_cpp_gpt2(int n_layer) {
  std::vector<GgufMapping> m = {{"token_embd.weight", "wte.weight"},
                                {"position_embd.weight", "wpe.weight"}};
  for (int l = 0; l < n_layer; l++) {
    const std::string blk = "blk." + std::to_string(l) + ".", h = "h." + std::to_string(l) + ".";
    for (const auto& [to, from] : std::vector<std::pair<std::string, std::string>>{
             {"attn_norm", "ln_1"}, {"attn_qkv", "attn.qkv"}, {"attn_output", "attn.proj"},
             {"ffn_norm", "ln_2"}, {"ffn_up", "mlp.up"}, {"ffn_down", "mlp.down"}}) {
      m.push_back({blk + to + ".weight", h + from + ".weight"});
      m.push_back({blk + to + ".bias", h + from + ".bias"});
    }
  }
  m.push_back({"output_norm.weight", "ln_f.weight"});
  m.push_back({"output_norm.bias", "ln_f.bias"});
  m.push_back({"output.weight", "wte.weight"});
  return m;
}

// llama.cpp's llama tensor names; q and k rows permuted (rope_heads), the rest as they are.
// The LM head is written even when tied, as for gpt2.
std::vector<GgufMapping> llama_cpp_llama(int n_layer, int n_head, int n_kv_head, bool tied) {
  std::vector<GgufMapping> m = {{"token_embd.weight", "tok_embeddings.weight"}};
  for (int l = 0; l < n_layer; l++) {
    const std::string blk = "blk." + std::to_string(l) + ".", h = "h." + std::to_string(l) + ".";
    m.push_back({blk + "attn_norm.weight", h + "attn_norm.weight"});
    m.push_back({blk + "attn_q.weight", h + "attn.q.weight", n_head});
    m.push_back({blk + "attn_k.weight", h + "attn.k.weight", n_kv_head});
    m.push_back({blk + "attn_v.weight", h + "attn.v.weight"});
    m.push_back({blk + "attn_output.weight", h + "attn.o.weight"});
    m.push_back({blk + "ffn_norm.weight", h + "mlp_norm.weight"});
    m.push_back({blk + "ffn_gate.weight", h + "mlp.gate.weight"});
    m.push_back({blk + "ffn_up.weight", h + "mlp.up.weight"});
    m.push_back({blk + "ffn_down.weight", h + "mlp.down.weight"});
  }
  m.push_back({"output_norm.weight", "norm.weight"});
  m.push_back({"output.weight", tied ? "tok_embeddings.weight" : "lm_head.weight"});
  return m;
}

// Tessera's rotary pairs are rotate-half (element i of a head with i + hs/2, Hugging
// Face's form); llama.cpp's llama rotates adjacent pairs (2j, 2j + 1). Permuting the rows
// of q and k within each head, row 2j + s <- row s * hs/2 + j, makes its rotation compute
// ours (the permutation convert_hf_to_gguf.py applies). q . k is unchanged: both move alike.
std::vector<float> interleave_rotary_rows(const std::vector<float>& w, int heads, int64_t cols) {
  const int64_t rows = (int64_t)w.size() / cols, hs = rows / heads;
  std::vector<float> out(w.size());
  for (int h = 0; h < heads; h++)
    for (int64_t j = 0; j < hs / 2; j++)
      for (int s = 0; s < 2; s++) {
        const float* src = w.data() + (h * hs + s * hs / 2 + j) * cols;
        std::copy(src, src + cols, out.data() + (h * hs + 2 * j + s) * cols);
      }
  return out;
}

// llama.cpp's llama_ftype for a file of mostly `dtype` tensors.
uint32_t file_type(ExportDtype dtype) {
  switch (dtype) {
    case ExportDtype::f32: return 0;   // LLAMA_FTYPE_ALL_F32
    case ExportDtype::f16: return 1;   // LLAMA_FTYPE_MOSTLY_F16
    case ExportDtype::q8_0: return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case ExportDtype::bf16: return 32; // LLAMA_FTYPE_MOSTLY_BF16
  }
  return 0;
}

GgufTensorType tensor_type(ExportDtype dtype) {
  switch (dtype) {
    case ExportDtype::f32: return GgufTensorType::f32;
    case ExportDtype::f16: return GgufTensorType::f16;
    case ExportDtype::q8_0: return GgufTensorType::q8_0;
    case ExportDtype::bf16: return GgufTensorType::bf16;
  }
  return GgufTensorType::f32;
}

// The vocabulary as llama.cpp's BPE reads it: token strings in GPT-2's byte-to-unicode
// form, their types (1 normal, 3 control) and the merges, lowest rank first.
struct GgufVocab {
  std::vector<std::string> tokens, merges;
  std::vector<int32_t> types;
  int eot = -1;
};

GgufVocab byte_vocab() {
  GgufVocab v;
  for (int b = 0; b < 256; b++) v.tokens.push_back(gpt2_byte_symbol((unsigned char)b));
  v.types.assign(256, 1);
  return v;
}

GgufVocab gpt2_vocab(const TokenizerFiles& files) {
  GgufVocab v;
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(std::ifstream(files.encoder));
  } catch (const nlohmann::json::exception& e) {
    throw Error(files.encoder + ": " + e.what());
  }
  v.tokens.resize(encoder.size());
  for (const auto& [token, id] : encoder.items()) {
    const int i = id.get<int>();
    check(i >= 0 && i < (int)v.tokens.size() && v.tokens[i].empty(),
          files.encoder + ": token ids are not 0.." + std::to_string(v.tokens.size() - 1) + " once each");
    v.tokens[i] = token;
  }
  v.types.assign(v.tokens.size(), 1);
  v.eot = encoder.value("<|endoftext|>", -1);
  if (v.eot >= 0) v.types[v.eot] = 3;
  std::ifstream merges(files.merges);
  check((bool)merges, files.merges + ": cannot open the merges file");
  std::string line;
  while (std::getline(merges, line))
    if (!line.empty() && line.rfind("#version", 0) != 0) v.merges.push_back(line);
  return v;
}

}  // namespace

int64_t write_gguf_export(CheckpointWeights& weights, ExportDtype dtype, const std::string& file) {
  const ModelConfig& m = weights.recipe().model;
  const TokenizerFiles tok = model_tokenizer(weights);
  const GgufVocab vocab = tok.kind == "gpt2" ? gpt2_vocab(tok) : byte_vocab();
  check((int)vocab.tokens.size() == m.vocab_size,
        weights.checkpoint().path + ": the tokenizer has " + std::to_string(vocab.tokens.size()) +
            " tokens, model.vocab_size is " + std::to_string(m.vocab_size));

  const GPTConfig g = GPTConfig::from_recipe(m);
  const std::string arch = g.llama() ? "llama" : "gpt2";
  GgufWriter w;
  w.add_string("general.architecture", arch);
  w.add_string("general.name", "tessera-" + weights.checkpoint().meta.run_id);
  w.add_u32("general.file_type", file_type(dtype));
  w.add_u32(arch + ".context_length", (uint32_t)m.seq_len);
  w.add_u32(arch + ".embedding_length", (uint32_t)m.n_embd);
  w.add_u32(arch + ".feed_forward_length", (uint32_t)g.mlp_width());
  w.add_u32(arch + ".block_count", (uint32_t)m.n_layer);
  w.add_u32(arch + ".attention.head_count", (uint32_t)m.n_head);
  if (g.llama()) {
    w.add_u32("llama.attention.head_count_kv", (uint32_t)g.kv_heads());
    w.add_f32("llama.attention.layer_norm_rms_epsilon", g.norm_eps);
    w.add_f32("llama.rope.freq_base", (float)g.rope_theta);
    w.add_u32("llama.rope.dimension_count", (uint32_t)g.head_size());
    w.add_u32("llama.vocab_size", (uint32_t)m.vocab_size);
  } else {
    w.add_f32("gpt2.attention.layer_norm_epsilon", 1e-5f);
  }
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "gpt-2");
  w.add_strings("tokenizer.ggml.tokens", vocab.tokens);
  w.add_i32s("tokenizer.ggml.token_type", vocab.types);
  w.add_strings("tokenizer.ggml.merges", vocab.merges);
  if (vocab.eot >= 0) {
    w.add_u32("tokenizer.ggml.bos_token_id", (uint32_t)vocab.eot);
    w.add_u32("tokenizer.ggml.eos_token_id", (uint32_t)vocab.eot);
  }

  // Vectors (norms, biases) stay F32, as llama.cpp's own converter keeps them.
  const std::vector<GgufMapping> mapping =
      g.llama() ? llama_cpp_llama(m.n_layer, m.n_head, g.kv_heads(), g.tied())
                : llama_cpp_gpt2(m.n_layer);
  std::vector<GgufTensor> tensors;
  std::vector<ExportDtype> types;
  for (const GgufMapping& t : mapping) {
    const std::vector<int64_t> shape = weights.shape(t.source);
    const ExportDtype d = shape.size() == 1 ? ExportDtype::f32 : dtype;
    types.push_back(d);
    tensors.push_back({t.target, shape, tensor_type(d)});
    gguf_tensor_bytes(tensors.back());  // refuses a shape the type cannot hold, before writing
  }
  w.open(file, tensors);
  for (size_t i = 0; i < mapping.size(); i++) {
    std::vector<float> values = weights.read(mapping[i].source);
    if (mapping[i].rope_heads > 0)
      values = interleave_rotary_rows(values, mapping[i].rope_heads, m.n_embd);
    write_encoded(values, types[i], [&](const void* data, int64_t bytes) { w.write_next(data, bytes); });
  }
  w.finish();
  return (int64_t)mapping.size();
}

}  // namespace tessera
