// A trained model's weights read out of a checkpoint one tensor at a time, for export:
// whatever layout wrote the checkpoint (read through its index), with a LoRA run's
// adapters folded into its base weights on the way, and the padded vocabulary cut back to
// the real one. Only the tensor being read is in memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "framework/recipe/recipe.h"

namespace tessera {

class CheckpointWeights {
 public:
  // Verifies every shard's checksums (and the LoRA base's, whose fingerprint must match
  // the one recorded), then opens the checkpoint for reading. `path`: a step directory or
  // a directory holding `latest`. Throws tessera::Error naming the file at fault.
  explicit CheckpointWeights(const std::string& path);
  ~CheckpointWeights();

  const Recipe& recipe() const { return recipe_; }    // as recorded in the checkpoint
  const LoadedCheckpoint& checkpoint() const { return reader_->info(); }
  const std::string& lora_base() const { return lora_base_; }  // its base's step dir, or ""
  // The LoRA base checkpoint's index, or null.
  const LoadedCheckpoint* lora_base_checkpoint() const {
    return base_reader_ ? &base_reader_->info() : nullptr;
  }

  // The logical shape of a base-model parameter as exported: the embedding (wte.weight,
  // tok_embeddings.weight) and llama's lm_head.weight are [V, C].
  std::vector<int64_t> shape(const std::string& name) const;
  // A base-model parameter (Tessera's name, e.g. "h.0.attn.qkv.weight"), fp32, row-major:
  // W + (alpha / r) B @ A when a LoRA adapter targets it, the vocabulary's rows cut to V.
  std::vector<float> read(const std::string& name);

 private:
  Recipe recipe_;
  std::unique_ptr<CheckpointReader> reader_;       // the checkpoint
  std::unique_ptr<CheckpointReader> base_reader_;  // its LoRA base, if any
  std::string lora_base_;
};

// dst[c, r] = src[r, c] for src [rows, cols] (Hugging Face's Conv1D stores [in, out]).
std::vector<float> transposed(const std::vector<float>& src, int64_t rows, int64_t cols);

// The number types of exported tensors.
enum class ExportDtype { f32, f16, bf16, q8_0 };
// "f32", "f16", "bf16", "q8_0" and back (an Error naming `what` for anything else).
const char* export_dtype_name(ExportDtype dtype);
ExportDtype export_dtype_from_name(const std::string& name, const std::string& what);

// The bytes of fp32 values stored as `dtype`, little-endian:
//   f32   as is
//   f16, bf16  rounded to nearest, ties to even (the trainer's casts)
//   q8_0  ggml's Q8_0 (quantize_row_q8_0_ref): per block of 32 consecutive values,
//         d = max|x| / 127 stored as f16, then q[i] = roundf(x[i] * (d ? 1/d : 0)) as int8;
//         34 bytes per block. values.size() must be a multiple of 32.
std::vector<char> encode(const std::vector<float>& values, ExportDtype dtype);

// Calls write(data, bytes) with the bytes of `values` as `dtype`: f32 straight from
// `values` (no second copy of the tensor), the others through encode().
template <typename Write>
void write_encoded(const std::vector<float>& values, ExportDtype dtype, Write&& write) {
  if (dtype == ExportDtype::f32) {
    write(values.data(), (int64_t)(values.size() * sizeof(float)));
    return;
  }
  const std::vector<char> bytes = encode(values, dtype);
  write(bytes.data(), (int64_t)bytes.size());
}

}  // namespace tessera
