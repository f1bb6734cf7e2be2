// Reading, writing and validating llm.c token shards (format in shard.h).
#include "framework/data/shard.h"

#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "base/error.h"

namespace tessera {

// The shard format is little-endian and we read it with plain loads.
static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; a big-endian host needs byte swaps here");

namespace {

namespace fs = std::filesystem;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_for_reading(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, not a token shard");
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error(path + ": cannot open token shard: " + std::strerror(errno));
  return f;
}

int64_t file_size(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error(path + ": cannot read file size: " + ec.message());
  return static_cast<int64_t>(size);
}

// Reads the header into `header`; returns the file size.
int64_t read_header(const std::string& path, std::FILE* f, int32_t* header) {
  const int64_t bytes = file_size(path);
  if (bytes < kShardHeaderBytes) {
    throw Error(path + ": truncated: file holds " + std::to_string(bytes) +
                " bytes, a token shard header needs " + std::to_string(kShardHeaderBytes));
  }
  if (std::fread(header, 4, kShardHeaderInts, f) != static_cast<size_t>(kShardHeaderInts)) {
    throw Error(path + ": cannot read the shard header: " + std::strerror(errno));
  }
  return bytes;
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

int64_t check_shard_header(const std::string& path, const int32_t* header, int64_t file_bytes) {
  if (header[0] != kShardMagic) {
    throw Error(path + ": bad magic " + std::to_string(header[0]) + " (expected " +
                std::to_string(kShardMagic) + ", an llm.c token shard)");
  }
  if (header[1] != kShardVersion) {
    throw Error(path + ": unsupported shard version " + std::to_string(header[1]) +
                " (expected " + std::to_string(kShardVersion) +
                ": uint16 tokens; llm.c's version 2 is a different format)");
  }
  const int64_t count = header[2];
  if (count < 0) {
    throw Error(path + ": negative token count " + std::to_string(count) + " in the header");
  }
  const int64_t have = (file_bytes - kShardHeaderBytes) / 2;
  const int64_t expected_bytes = kShardHeaderBytes + 2 * count;
  if (file_bytes < expected_bytes) {
    throw Error(path + ": truncated: header says " + std::to_string(count) +
                " tokens, file holds " + std::to_string(have));
  }
  if (file_bytes > expected_bytes) {
    throw Error(path + ": " + std::to_string(file_bytes - expected_bytes) +
                " extra bytes after the " + std::to_string(count) +
                " tokens the header announces (expected a file of " +
                std::to_string(expected_bytes) + " bytes)");
  }
  return count;
}

int64_t read_shard_header(const std::string& path) {
  File f = open_for_reading(path);
  int32_t header[kShardHeaderInts];
  const int64_t bytes = read_header(path, f.get(), header);
  return check_shard_header(path, header, bytes);
}

std::vector<uint16_t> read_shard(const std::string& path) {
  File f = open_for_reading(path);
  int32_t header[kShardHeaderInts];
  const int64_t bytes = read_header(path, f.get(), header);
  const int64_t count = check_shard_header(path, header, bytes);
  std::vector<uint16_t> tokens(static_cast<size_t>(count));
  if (!tokens.empty() && std::fread(tokens.data(), 2, tokens.size(), f.get()) != tokens.size()) {
    throw Error(path + ": cannot read " + std::to_string(count) + " tokens: " +
                std::strerror(errno));
  }
  return tokens;
}

void write_shard(const std::string& path, std::span<const uint16_t> tokens) {
  if (static_cast<int64_t>(tokens.size()) > kShardMaxTokens) {
    throw Error(path + ": " + std::to_string(tokens.size()) +
                " tokens do not fit one shard (at most " + std::to_string(kShardMaxTokens) +
                ", the header's count is an int32)");
  }
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());

  const std::string tmp = path + ".tmp";
  File f(std::fopen(tmp.c_str(), "wb"));
  if (!f) throw Error(tmp + ": cannot create token shard: " + std::strerror(errno));
  bool ok = std::fwrite(header, 4, kShardHeaderInts, f.get()) == size_t(kShardHeaderInts) &&
            (tokens.empty() ||  // an empty span may hold a null pointer: skip fwrite
             std::fwrite(tokens.data(), 2, tokens.size(), f.get()) == tokens.size()) &&
            std::fflush(f.get()) == 0 && ::fsync(::fileno(f.get())) == 0;
  const int write_errno = errno;
  ok = (std::fclose(f.release()) == 0) && ok;  // fclose reports late write errors too
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(tmp + ": cannot write token shard: " + std::strerror(write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " into place: " + std::strerror(rename_errno));
  }
}

void check_token_range(const std::string& path, std::span<const uint16_t> tokens,
                       int vocab_size) {
  // One branch-free pass (it vectorizes) over possibly gigabytes; find the culprit only
  // when there is one.
  uint16_t max_token = 0;
  for (uint16_t t : tokens) max_token = std::max(max_token, t);
  if (tokens.empty() || max_token < vocab_size) return;
  const auto bad = std::find_if(tokens.begin(), tokens.end(),
                                [&](uint16_t t) { return t >= vocab_size; });
  throw Error(path + ": token " + std::to_string(*bad) + " at index " +
              std::to_string(bad - tokens.begin()) + " is >= model.vocab_size " +
              std::to_string(vocab_size));
}

std::vector<std::string> expand_shard_pattern(const std::string& pattern) {
  if (pattern.empty()) throw Error("token shard pattern is empty (expected a path or a glob)");

  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) files.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  ::globfree(&g);
  if (rc != 0 && rc != GLOB_NOMATCH) {
    throw Error("'" + pattern + "': glob failed (" +
                (rc == GLOB_NOSPACE ? "out of memory" : "read error") + ")");
  }
  if (!files.empty()) {
    std::sort(files.begin(), files.end());
    return files;
  }

  // Nothing matched: say why, starting from the deepest directory without glob chars.
  if (!has_glob_chars(pattern)) {
    throw Error(pattern + ": token shard does not exist");
  }
  std::string dir = fs::path(pattern).parent_path().string();
  while (has_glob_chars(dir)) dir = fs::path(dir).parent_path().string();
  const std::string shown = dir.empty() ? "." : dir;
  std::error_code ec;
  if (!dir.empty() && !fs::is_directory(dir, ec)) {
    throw Error("no token shard matches '" + pattern + "' (directory " + shown +
                " does not exist)");
  }
  throw Error("no token shard matches '" + pattern + "' (directory " + shown +
              " exists but holds no matching file)");
}

}  // namespace tessera
