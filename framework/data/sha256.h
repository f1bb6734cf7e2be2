// SHA-256 (FIPS 180-4), so that meta.json and the run log record input and shard hashes
// that a user can check with the standard `sha256sum` tool.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t bytes);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::array<uint8_t, 32> digest();  // finishes the hash; call once
  std::string hex_digest();          // 64 lowercase hex digits; call once

 private:
  void compress(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
// Hashes a file in chunks; throws tessera::Error naming the file if it cannot be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace tessera
