#include "framework/runlog/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>

#include "base/error.h"

namespace tessera {

namespace {

// The table of the reflected CRC-32C: entry b is the CRC of the single byte b.
std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[b] = c;
  }
  return table;
}

// Protobuf wire format, as much as Event needs: a key is (field << 3) | wire type, with
// wire types 0 (varint), 1 (8 bytes), 2 (length-delimited), 5 (4 bytes).
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += (char)(uint8_t)(v | 0x80);
    v >>= 7;
  }
  out += (char)(uint8_t)v;
}
template <typename T>
void put_fixed(std::string& out, int field, T value) {  // double: wire type 1, float: 5
  static_assert(sizeof(T) == 8 || sizeof(T) == 4);
  put_varint(out, (uint64_t)field << 3 | (sizeof(T) == 8 ? 1 : 5));
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian on every machine we build for
  out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, (uint64_t)field << 3 | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event fields (tensorflow/core/util/event.proto): wall_time = 1, step = 2,
// file_version = 3, summary = 5. Summary: value = 1; Summary.Value: tag = 1, simple_value = 2.
std::string file_version_event() {
  std::string e;
  put_fixed<double>(e, 1, wall_time_now());
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string scalar_event(const std::string& tag, int64_t step, float value) {
  std::string v;
  put_bytes(v, 1, tag);
  put_fixed<float>(v, 2, value);
  std::string summary;
  put_bytes(summary, 1, v);
  std::string e;
  put_fixed<double>(e, 1, wall_time_now());
  put_varint(e, 2 << 3 | 0);
  put_varint(e, (uint64_t)step);
  put_bytes(e, 5, summary);
  return e;
}

}  // namespace

uint32_t crc32c(const void* data, size_t bytes) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < bytes; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t bytes) {
  const uint32_t c = crc32c(data, bytes);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  path_ = dir + "/events.out.tfevents." + std::to_string(seconds) + "." + host;
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw Error("cannot create the TensorBoard event file " + path_ + ": " + std::strerror(errno));
  write_record(file_version_event());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value) {
  write_record(scalar_event(tag, step, (float)value));
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) throw Error("cannot write the TensorBoard event file " + path_ + ": " + std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& event) {
  char header[12];
  const uint64_t length = event.size();
  std::memcpy(header, &length, 8);
  const uint32_t length_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &length_crc, 4);
  const uint32_t data_crc = masked_crc32c(event.data(), event.size());
  if (std::fwrite(header, 1, 12, file_) != 12 || std::fwrite(event.data(), 1, event.size(), file_) != event.size() ||
      std::fwrite(&data_crc, 1, 4, file_) != 4)
    throw Error("cannot write the TensorBoard event file " + path_ + ": " + std::strerror(errno));
}

}  // namespace tessera
