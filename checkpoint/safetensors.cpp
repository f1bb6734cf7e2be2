#include "checkpoint/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "checkpoint/format.h"

namespace tessera {

int64_t safetensors_dtype_bytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  throw Error("safetensors: dtype '" + dtype + "' is not one of F32, F16, BF16");
}

int64_t safetensors_entry_bytes(const SafetensorsEntry& entry) {
  return ckpt::numel(entry.shape) * safetensors_dtype_bytes(entry.dtype);
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), entries_(std::move(entries)) {
  nlohmann::ordered_json header;
  header["__metadata__"] = nlohmann::ordered_json::object();
  for (const auto& [key, value] : metadata) header["__metadata__"][key] = value;
  int64_t offset = 0;
  for (const SafetensorsEntry& e : entries_) {
    const int64_t bytes = safetensors_entry_bytes(e);
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  file_.create(path_);
  const uint64_t n = text.size();
  char length[8];
  std::memcpy(length, &n, 8);  // little-endian on every machine we build for
  file_.write(length, 8);
  file_.write(text.data(), text.size());
}

void SafetensorsWriter::write_next(const void* data, int64_t bytes) {
  check(next_ < entries_.size(), path_ + ": more tensors written than the header lists");
  const SafetensorsEntry& e = entries_[next_];
  check(bytes == safetensors_entry_bytes(e),
        path_ + ": tensor '" + e.name + "' has " + std::to_string(safetensors_entry_bytes(e)) +
            " bytes in the header, " + std::to_string(bytes) + " given");
  file_.write(data, (size_t)bytes);
  next_++;
}

void SafetensorsWriter::finish() {
  check(next_ == entries_.size(), path_ + ": " + std::to_string(entries_.size() - next_) +
                                      " tensor(s) of the header not written");
  file_.close();
}

}  // namespace tessera
