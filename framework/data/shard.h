// llm.c token shards: the on-disk format of tokenized training data.
//
//   bytes 0..1023   header: 256 little-endian int32
//                   [0] = 20240520 (magic), [1] = 1 (version), [2] = token count N,
//                   the rest zero
//   bytes 1024..    N little-endian uint16 token ids
//
// The file size must be exactly 1024 + 2*N; anything else is a damaged shard. Because the
// format is llm.c's, shards written by llm.c's own data scripts load here and vice versa.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tessera {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;
inline constexpr int64_t kShardMaxTokens = INT32_MAX;  // the count is an int32

// Validates a shard header against the file's size and returns the token count. Throws
// tessera::Error naming `path` for a short file, a wrong magic or version, a negative
// count, a truncated token array, or extra bytes after it.
int64_t check_shard_header(const std::string& path, const int32_t* header, int64_t file_bytes);

// Reads and validates just the header of the shard at `path`; returns the token count.
int64_t read_shard_header(const std::string& path);

// Reads a whole shard into memory (for tests and small files; the loader maps shards).
std::vector<uint16_t> read_shard(const std::string& path);

// Writes a shard: first to path + ".tmp", then renames it over `path`, so a reader never
// sees a half-written file. Throws tessera::Error if the file cannot be written or holds
// more than kShardMaxTokens tokens.
void write_shard(const std::string& path, std::span<const uint16_t> tokens);

// Throws tessera::Error naming `path` and the index of the first token >= vocab_size
// (e.g. "x.bin: token 300 at index 17 is >= model.vocab_size 256").
void check_token_range(const std::string& path, std::span<const uint16_t> tokens,
                       int vocab_size);

// Expands a shard path or glob pattern (glob(3)) into a sorted list of files. Throws
// tessera::Error saying why nothing matched: the directory does not exist, the file does
// not exist, or the directory holds no file matching the pattern.
std::vector<std::string> expand_shard_pattern(const std::string& pattern);

}  // namespace tessera
