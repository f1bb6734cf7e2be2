#include "checkpoint/gguf.h"

#include <cstring>

#include "base/error.h"
#include "checkpoint/format.h"

namespace tessera {

namespace {

// GGUF's metadata value types (gguf.h's enum gguf_type).
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <typename T>
void put(std::string& out, T value) {  // little-endian on every machine we build for
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

uint64_t padded(uint64_t n) {
  return (n + GgufWriter::kAlignment - 1) / GgufWriter::kAlignment * GgufWriter::kAlignment;
}

}  // namespace

int64_t gguf_tensor_bytes(const GgufTensor& t) {
  const int64_t n = ckpt::numel(t.shape);
  switch (t.type) {
    case GgufTensorType::f32: return 4 * n;
    case GgufTensorType::f16:
    case GgufTensorType::bf16: return 2 * n;
    case GgufTensorType::q8_0:
      check(t.shape.back() % 32 == 0, "tensor '" + t.name + "' of shape " + ckpt::shape_string(t.shape) +
                                          " cannot be Q8_0: its rows of " + std::to_string(t.shape.back()) +
                                          " values are not whole blocks of 32");
      return n / 32 * 34;
  }
  throw Error("tensor '" + t.name + "': unknown GGUF type");
}

void GgufWriter::put_key(const std::string& key, uint32_t type) {
  put_string(metadata_, key);
  put<uint32_t>(metadata_, type);
  metadata_count_++;
}

void GgufWriter::add_u32(const std::string& key, uint32_t value) {
  put_key(key, kU32);
  put(metadata_, value);
}
void GgufWriter::add_i32(const std::string& key, int32_t value) {
  put_key(key, kI32);
  put(metadata_, value);
}
void GgufWriter::add_f32(const std::string& key, float value) {
  put_key(key, kF32);
  put(metadata_, value);
}
void GgufWriter::add_bool(const std::string& key, bool value) {
  put_key(key, kBool);
  put<uint8_t>(metadata_, value ? 1 : 0);
}
void GgufWriter::add_string(const std::string& key, const std::string& value) {
  put_key(key, kString);
  put_string(metadata_, value);
}
void GgufWriter::add_strings(const std::string& key, const std::vector<std::string>& values) {
  put_key(key, kArray);
  put<uint32_t>(metadata_, kString);
  put<uint64_t>(metadata_, values.size());
  for (const std::string& v : values) put_string(metadata_, v);
}
void GgufWriter::add_i32s(const std::string& key, const std::vector<int32_t>& values) {
  put_key(key, kArray);
  put<uint32_t>(metadata_, kI32);
  put<uint64_t>(metadata_, values.size());
  for (int32_t v : values) put(metadata_, v);
}

void GgufWriter::open(const std::string& path, const std::vector<GgufTensor>& tensors) {
  path_ = path;
  tensors_ = tensors;
  std::string head = "GGUF";
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, metadata_count_);
  head += metadata_;
  uint64_t offset = 0;
  for (const GgufTensor& t : tensors_) {
    check(!t.name.empty() && t.name.size() < 64, "GGUF tensor name '" + t.name + "' is not 1 to 63 bytes");
    put_string(head, t.name);
    put<uint32_t>(head, (uint32_t)t.shape.size());
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) put<uint64_t>(head, (uint64_t)*d);
    put<uint32_t>(head, (uint32_t)t.type);
    put<uint64_t>(head, offset);
    offset += padded((uint64_t)gguf_tensor_bytes(t));
  }
  head.append(padded(head.size()) - head.size(), '\0');
  file_.create(path_);
  file_.write(head.data(), head.size());
}

void GgufWriter::write_next(const void* data, int64_t bytes) {
  check(next_ < tensors_.size(), path_ + ": more tensors written than listed");
  const GgufTensor& t = tensors_[next_];
  check(bytes == gguf_tensor_bytes(t), path_ + ": tensor '" + t.name + "' needs " +
                                           std::to_string(gguf_tensor_bytes(t)) + " bytes, " +
                                           std::to_string(bytes) + " given");
  static const char zeros[kAlignment] = {};
  const size_t pad = padded((uint64_t)bytes) - (uint64_t)bytes;
  file_.write(data, (size_t)bytes);
  file_.write(zeros, pad);
  next_++;
}

void GgufWriter::finish() {
  check(next_ == tensors_.size(), path_ + ": " + std::to_string(tensors_.size() - next_) +
                                      " listed tensor(s) not written");
  file_.close();
}

}  // namespace tessera
