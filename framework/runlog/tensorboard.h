// TensorBoard event files: the run log's scalars, for watching a run live in TensorBoard.
//
// A file `events.out.tfevents.<unix seconds>.<host>` is a sequence of records:
//   u64 length | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
// (little-endian), each data an `Event` protobuf: the first {wall_time, file_version
// "brain.Event:2"}, then one per scalar {wall_time, step, summary {value {tag,
// simple_value}}}. The protobuf bytes are written by hand (five fields), so there is no
// protobuf dependency. docs/run-log.md lists the tags.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace tessera {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t bytes);
// TFRecord's masking of a stored CRC: ((c >> 15) | (c << 17)) + 0xA282EAD8.
uint32_t masked_crc32c(const void* data, size_t bytes);

class TensorBoardWriter {
 public:
  // Creates `dir`/events.out.tfevents.<seconds>.<host> and writes the file_version
  // record; throws tessera::Error naming the file when it cannot.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar (stored as float32, TensorBoard's simple_value) at `step`.
  void scalar(const std::string& tag, int64_t step, double value);
  // Pushes what was written to the file, so that a TensorBoard watching it sees it.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace tessera
