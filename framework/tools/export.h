// `tessera export`: a checkpoint's model in a format another program serves.
//
//   gguf         one file for llama.cpp: architecture gpt2, the tokenizer inside, tensors
//                in f32, f16, bf16 or q8_0 (1-D tensors always f32)
//   safetensors  a directory for Hugging Face transformers: model.safetensors (or
//                model-0000K-of-0000N.safetensors + model.safetensors.index.json past
//                max_shard_bytes) under GPT2LMHeadModel's names, config.json, and for a
//                GPT-2 BPE model the tokenizer's vocab.json, merges.txt, tokenizer_config.json
//
// The checkpoint is read one tensor at a time (CheckpointWeights): memory holds the tensor
// being converted and its output buffer, not the model. Everything is written under a
// temporary name beside `out` and renamed into place at the end: a failure leaves nothing
// at `out`. Each export records where it came from (lineage.h). docs/export.md describes
// the formats and the name mapping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

struct ExportOptions {
  std::string checkpoint;          // a step directory or a directory holding `latest`
  std::string format;              // gguf | safetensors
  std::string out;                 // the file (gguf) or directory (safetensors) to create
  std::string dtype = "f32";       // f32 | f16 | bf16 | q8_0 (gguf only)
  bool force = false;              // replace an existing `out`
  int64_t max_shard_bytes = 2'000'000'000;  // safetensors: split the weights past this
};

struct ExportedFile {
  std::string path;
  int64_t bytes = 0;
  std::string sha256;
};

struct ExportResult {
  std::string path;                 // `out`
  std::string checkpoint;           // the step directory exported
  std::string format, dtype;
  std::vector<ExportedFile> files;  // every file written, in order
  int64_t tensors = 0;              // how many tensors
  double seconds = 0;
  std::string lineage;              // the lineage file written (lineage.h)
  std::string run_log;              // the run log the export was recorded in, or ""
};

// Checks the options (format, dtype, `out` free unless force) before reading anything,
// then exports. Throws tessera::Error naming the option, file or tensor at fault.
ExportResult export_model(const ExportOptions& options);

}  // namespace tessera
