#include "framework/tools/export_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "checkpoint/format.h"
#include "framework/train/checkpointing.h"
#include "kernels/cpu/mixed_precision.h"

namespace tessera {

CheckpointWeights::CheckpointWeights(const std::string& path) {
  const std::string dir = resolve_checkpoint_dir(path);
  verify_checkpoint(dir);
  reader_ = std::make_unique<CheckpointReader>(dir);
  const LoadedCheckpoint& info = reader_->info();
  recipe_ = parse_recipe(info.meta.recipe_yaml, dir + "/index.h5 (/meta/recipe_yaml)");
  if (recipe_.lora.rank == 0) return;
  // Adapters only: the base weights come from the checkpoint the run started from, which
  // must still be the one it was (its fingerprint is recorded).
  const nlohmann::json base = info.meta.extra.value("lora_base", nlohmann::json());
  check(base.is_object() && base.contains("path"),
        dir + "/index.h5: a LoRA checkpoint without its base model's reference (/meta/extra lora_base)");
  try {
    lora_base_ = resolve_checkpoint_dir(base.at("path").get<std::string>());
  } catch (const Error& e) {
    throw Error(dir + ": its LoRA base model is gone: " + e.what());
  }
  verify_checkpoint(lora_base_);
  base_reader_ = std::make_unique<CheckpointReader>(lora_base_);
  const std::string fingerprint = checkpoint_fingerprint(base_reader_->info());
  check(fingerprint == base.value("fingerprint", ""),
        dir + ": its LoRA base model " + lora_base_ + " has changed since (fingerprint " +
            fingerprint + ", recorded " + base.value("fingerprint", "") + ")");
}

CheckpointWeights::~CheckpointWeights() = default;

std::vector<int64_t> CheckpointWeights::shape(const std::string& name) const {
  std::vector<int64_t> s = (base_reader_ ? *base_reader_ : *reader_).tensor(name).shape;
  if (name == "wte.weight" || name == "tok_embeddings.weight" || name == "lm_head.weight")
    s[0] = recipe_.model.vocab_size;
  return s;
}

std::vector<float> CheckpointWeights::read(const std::string& name) {
  CheckpointReader& weights = base_reader_ ? *base_reader_ : *reader_;
  const std::vector<int64_t> full = weights.tensor(name).shape;
  const std::vector<int64_t> out = shape(name);
  std::vector<float> w((size_t)ckpt::numel(out));
  // The rows past V of a padded embedding are never used: read only the first V.
  weights.read({name, full, w.data(), std::vector<int64_t>(full.size(), 0), out});
  const std::string suffix = ".weight";
  if (!base_reader_ || name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return w;
  const std::string stem = name.substr(0, name.size() - suffix.size());
  const LoadedCheckpoint& adapters = reader_->info();
  const bool adapted = std::any_of(adapters.tensors.begin(), adapters.tensors.end(),
                                   [&](const CheckpointTensorInfo& t) { return t.name == stem + ".lora_a"; });
  if (!adapted) return w;
  // W[out, in] += (alpha / r) B[out, r] @ A[r, in], summed in double: the merge adds one
  // rounding to W's value, not r of them.
  const std::vector<float> a = reader_->read_tensor(stem + ".lora_a");
  const std::vector<float> b = reader_->read_tensor(stem + ".lora_b");
  const int64_t rows = out[0], cols = out[1], r = recipe_.lora.rank;
  check((int64_t)a.size() == r * cols && (int64_t)b.size() == rows * r,
        reader_->info().path + ": the adapters of " + name + " do not match its shape");
  const double scale = recipe_.lora.alpha / (double)r;
#pragma omp parallel for
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      double sum = 0;
      for (int64_t k = 0; k < r; k++) sum += (double)b[i * r + k] * a[k * cols + j];
      w[i * cols + j] = (float)(w[i * cols + j] + scale * sum);
    }
  return w;
}

std::vector<float> transposed(const std::vector<float>& src, int64_t rows, int64_t cols) {
  std::vector<float> dst(src.size());
#pragma omp parallel for
  for (int64_t c = 0; c < cols; c++)
    for (int64_t r = 0; r < rows; r++) dst[c * rows + r] = src[r * cols + c];
  return dst;
}

const char* export_dtype_name(ExportDtype dtype) {
  switch (dtype) {
    case ExportDtype::f32: return "f32";
    case ExportDtype::f16: return "f16";
    case ExportDtype::bf16: return "bf16";
    case ExportDtype::q8_0: return "q8_0";
  }
  return "?";
}

ExportDtype export_dtype_from_name(const std::string& name, const std::string& what) {
  for (ExportDtype d : {ExportDtype::f32, ExportDtype::f16, ExportDtype::bf16, ExportDtype::q8_0})
    if (name == export_dtype_name(d)) return d;
  throw Error(what + " '" + name + "' is not one of f32, f16, bf16, q8_0");
}

namespace {

uint16_t to_f16(float x) {
  uint16_t h;
  kernels::round_to_16bit(kernels::Dtype::fp16, &h, &x, 1);
  return h;
}

// ggml's block_q8_0: {f16 d; int8 qs[32]}.
void quantize_q8_0_block(const float* x, char* out) {
  float amax = 0;
  for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  const uint16_t d16 = to_f16(d);
  std::memcpy(out, &d16, 2);
  for (int i = 0; i < 32; i++) out[2 + i] = (char)(int8_t)std::roundf(x[i] * id);
}

}  // namespace

std::vector<char> encode(const std::vector<float>& values, ExportDtype dtype) {
  const int64_t n = (int64_t)values.size();
  switch (dtype) {
    case ExportDtype::f32: {
      std::vector<char> out(n * 4);
      std::memcpy(out.data(), values.data(), out.size());
      return out;
    }
    case ExportDtype::f16:
    case ExportDtype::bf16: {
      std::vector<char> out(n * 2);
      kernels::round_to_16bit(dtype == ExportDtype::f16 ? kernels::Dtype::fp16 : kernels::Dtype::bf16,
                              reinterpret_cast<uint16_t*>(out.data()), values.data(), n);
      return out;
    }
    case ExportDtype::q8_0: {
      check(n % 32 == 0, "Q8_0 needs whole blocks of 32 values, got " + std::to_string(n));
      std::vector<char> out(n / 32 * 34);
#pragma omp parallel for
      for (int64_t b = 0; b < n / 32; b++) quantize_q8_0_block(values.data() + b * 32, out.data() + b * 34);
      return out;
    }
  }
  throw Error("unknown export dtype");
}

}  // namespace tessera
