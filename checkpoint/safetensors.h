// safetensors files (Hugging Face's format for weights): written tensor after tensor.
//
//   u64 N (little-endian) | N bytes of JSON header | data
//   header: {"__metadata__": {string: string},
//            "<name>": {"dtype": "F32" | "F16" | "BF16", "shape": [..],
//                       "data_offsets": [begin, end]}, ...}
// The offsets count from the start of the data; the tensors lie back to back, C order,
// little-endian, in the header's order, with no gaps. The header is padded with spaces to
// a multiple of 8 bytes so that the data starts aligned. Shapes are known before any data,
// so the header is written first and each tensor's bytes follow as they are produced.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/output_file.h"

namespace tessera {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // "F32", "F16" or "BF16"
  std::vector<int64_t> shape;
};

// Bytes per element of a safetensors dtype; throws tessera::Error for another name.
int64_t safetensors_dtype_bytes(const std::string& dtype);
// Bytes of an entry's data.
int64_t safetensors_entry_bytes(const SafetensorsEntry& entry);

class SafetensorsWriter {
 public:
  // Creates `path` (truncating) and writes the header; throws tessera::Error naming it.
  SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> entries,
                    const std::map<std::string, std::string>& metadata);
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The bytes of the next entry, in order; their count must be the entry's.
  void write_next(const void* data, int64_t bytes);
  // After the last entry: flushes and fsyncs. Throws if an entry was not written.
  void finish();

 private:
  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  size_t next_ = 0;
  OutputFile file_;  // an unfinished file is closed (the caller removes it)
};

}  // namespace tessera
