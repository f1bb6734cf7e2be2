// GGUF files (version 3; llama.cpp's format): metadata, then tensors written one by one.
//
//   "GGUF" | u32 version 3 | u64 tensor count | u64 metadata count
//   metadata: key (u64 length + bytes) | u32 value type | value
//   tensor infos: name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset
//   padding to `general.alignment` (32), then each tensor's data at its offset (relative
//   to the data's start), each padded to the alignment
// Little-endian. Strings are u64 length + bytes (no terminator). ne[] is ggml's order: ne[0]
// is the innermost (fastest) dimension, so a row-major [rows, cols] matrix has ne = {cols,
// rows}. The writer takes row-major shapes and reverses them. llama.cpp checks each key's
// type exactly, so callers pick the typed add_* that its loader expects.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/output_file.h"

namespace tessera {

// ggml tensor types this writer knows (ggml.h's enum ggml_type values).
enum class GgufTensorType : uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };

struct GgufTensor {
  std::string name;             // < 64 bytes (GGML_MAX_NAME)
  std::vector<int64_t> shape;   // row-major; the innermost dimension last
  GgufTensorType type;
};

// Bytes of a tensor's data: 4 or 2 per element; Q8_0 34 per block of 32 along the
// innermost dimension, which must then be a multiple of 32 (an Error otherwise).
int64_t gguf_tensor_bytes(const GgufTensor& tensor);

class GgufWriter {
 public:
  static constexpr uint32_t kAlignment = 32;

  // Metadata, in the order added (general.alignment is not written: 32 is the default).
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_strings(const std::string& key, const std::vector<std::string>& values);
  void add_i32s(const std::string& key, const std::vector<int32_t>& values);

  // Creates `path` and writes the header, the metadata and the tensor infos; then the
  // tensors' bytes follow through write_next in this order. Throws tessera::Error naming
  // the file.
  void open(const std::string& path, const std::vector<GgufTensor>& tensors);
  void write_next(const void* data, int64_t bytes);
  void finish();  // after the last tensor: flush and fsync

 private:
  void put_key(const std::string& key, uint32_t type);
  std::string metadata_;        // the encoded key/value pairs
  uint64_t metadata_count_ = 0;
  std::string path_;
  std::vector<GgufTensor> tensors_;
  size_t next_ = 0;
  OutputFile file_;  // an unfinished file is closed (the caller removes it)
};

}  // namespace tessera
