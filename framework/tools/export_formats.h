// The writers behind export_model() (export.h), one per format. Each writes into a path
// that export.cpp has staged (a fresh directory for safetensors, a fresh file name for
// GGUF) and returns how many tensors it wrote.
#pragma once
#include <cstdint>
#include <string>

#include "framework/tools/export_weights.h"

namespace tessera {

// model.safetensors (or shards + index), config.json, tokenizer files, into `dir`.
int64_t write_safetensors_export(CheckpointWeights& weights, ExportDtype dtype,
                                 int64_t max_shard_bytes, const std::string& dir);

// One GGUF file for llama.cpp (architecture gpt2 or llama), tokenizer inside, at `file`.
int64_t write_gguf_export(CheckpointWeights& weights, ExportDtype dtype, const std::string& file);

// The tokenizer of the model's training data (its meta.json): "bytes" or "gpt2" with files.
TokenizerFiles model_tokenizer(const CheckpointWeights& weights);

}  // namespace tessera
