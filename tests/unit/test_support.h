// Test helpers shared by tests/unit/*.cpp: fresh temporary directories, small files
// written and read back, token shards written byte by byte, the message of a
// tessera::Error, and a scoped OpenMP thread count. The helpers for running the `tessera` binary build on these, in
// tests/e2e/tessera_process.h.
//
// Header-only (inline functions) so that the test files can include it without a new
// library target.
#pragma once
#include <gtest/gtest.h>
#include <hdf5.h>
#include <omp.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "base/error.h"

namespace tessera::test_support {

// A fresh, empty directory <gtest temp dir>/tessera_<name>_<pid>. The pid keeps the
// test processes that ctest runs side by side apart; `name` keeps the tests apart.
inline std::string fresh_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("tessera_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// A fresh_dir that goes away with the object, unless the test has failed: then its files
// stay behind for a look at what went wrong.
struct ScratchDir {
  const std::string dir;

  explicit ScratchDir(const std::string& name) : dir(fresh_dir(name)) {}
  ~ScratchDir() {
    std::error_code ec;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// An llm.c token shard written byte by byte (not through framework/data/shard.h, so
// that a bug there cannot cancel out): 256 little-endian int32 header words, then the
// tokens as little-endian uint16. `count` overrides the header's token count; `extra`
// is appended after the tokens.
inline void write_raw_shard(const std::string& path, const std::vector<uint16_t>& tokens,
                            int32_t magic = 20240520, int32_t version = 1,
                            int64_t count = -1, const std::string& extra = "") {
  int32_t header[256] = {};
  header[0] = magic;
  header[1] = version;
  header[2] = static_cast<int32_t>(count >= 0 ? count : int64_t(tokens.size()));
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header), sizeof header);
  f.write(reinterpret_cast<const char*>(tokens.data()),
          static_cast<std::streamsize>(tokens.size() * 2));
  f << extra;
}

// Tokens a model can learn: a short byte pattern repeated.
inline std::vector<uint16_t> pattern_tokens(size_t n, int modulo = 200) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>((i * 7 + i / 13) % modulo);
  return t;
}

// Runs f, expects a tessera::Error, and returns its message; when f returns normally
// the test fails and the message is "" (any other exception propagates to gtest).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tessera::Error";
  return "";
}

// Flips one bit of byte `at` of a contiguous HDF5 dataset's data, in place: a corrupt
// checkpoint piece. Fails the test when the dataset has no file offset.
inline void flip_bit_in_dataset(const std::string& file, const std::string& dataset, int64_t at) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t offset = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  ASSERT_NE(offset, HADDR_UNDEF) << file << " " << dataset;
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg((std::streamoff)(offset + at));
  char c = 0;
  io.read(&c, 1);
  c ^= 0x10;
  io.seekp((std::streamoff)(offset + at));
  io.write(&c, 1);
}

// Sets the OpenMP thread count for a scope and restores the previous one.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

}  // namespace tessera::test_support
