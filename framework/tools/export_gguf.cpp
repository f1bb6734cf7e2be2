// One GGUF file for llama.cpp, architecture gpt2 (docs/export.md): its metadata keys with
// the types llama.cpp's loader checks, the tokenizer inside, and the weights.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "checkpoint/gguf.h"
#include "framework/data/prepare.h"
#include "framework/data/tokenizer.h"
#include "framework/tools/export_formats.h"

namespace tessera {

namespace {

// llama.cpp's gpt2 tensor names. Its matrices are Tessera's [out, in] row-major as they
// are (ggml's ne = {in, out}), q, k, v in the same order: no transposes. The LM head
// (output.weight) is required although GPT-2 ties it to token_embd.
struct GgufMapping {
  std::string target, source;
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

  GgufWriter w;
  w.add_string("general.architecture", "gpt2");
  w.add_string("general.name", "tessera-" + weights.checkpoint().meta.run_id);
  w.add_u32("general.file_type", file_type(dtype));
  w.add_u32("gpt2.context_length", (uint32_t)m.seq_len);
  w.add_u32("gpt2.embedding_length", (uint32_t)m.n_embd);
  w.add_u32("gpt2.feed_forward_length", (uint32_t)(4 * m.n_embd));
  w.add_u32("gpt2.block_count", (uint32_t)m.n_layer);
  w.add_u32("gpt2.attention.head_count", (uint32_t)m.n_head);
  w.add_f32("gpt2.attention.layer_norm_epsilon", 1e-5f);
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
  const std::vector<GgufMapping> mapping = llama_cpp_gpt2(m.n_layer);
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
    write_encoded(weights.read(mapping[i].source), types[i],
                  [&](const void* data, int64_t bytes) { w.write_next(data, bytes); });
  }
  w.finish();
  return (int64_t)mapping.size();
}

}  // namespace tessera
