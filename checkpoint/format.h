// Names fixed by the on-disk format (docs/checkpoints.md), shared by writer and reader.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tessera::ckpt {

// 2: one shard file per writing rank holding boxes ("pieces") of logical tensors (1: one
// shard file of whole tensors).
inline constexpr int kFormatVersion = 2;
inline constexpr const char* kIndexFormat = "tessera-checkpoint";        // index.h5 "format"
inline constexpr const char* kShardFormat = "tessera-checkpoint-shard";  // rank_XXXXX.h5 "format"
inline constexpr const char* kIndexFile = "index.h5";
inline constexpr const char* kLatestFile = "latest";
inline constexpr const char* kTmpMarker = ".tmp-";     // step_000200.tmp-<run id>: being written
inline constexpr const char* kTensorGroup = "tensors";  // index.h5: /tensors/<logical name>
inline constexpr const char* kPieceGroup = "pieces";    // rank_XXXXX.h5: /pieces/<k>
inline constexpr const char* kMetaGroup = "meta";       // /meta/recipe_yaml, layout_json, rng_json, extra_json, shards_json
inline constexpr const char* kChecksumAttr = "checksum";
inline constexpr const char* kChecksumPrefix = "xxh64:";

// "rank_00003.h5"
inline std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.h5", rank);
  return buf;
}

// True for a complete checkpoint's directory name, "step_" followed by digits only (so
// "step_000200.tmp-..." and "step_000200.old-..." are not), and sets *step.
inline bool parse_step_dir_name(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.compare(0, 5, "step_") != 0 || name.size() > 5 + 18) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); i++) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

// "[256, 64]": a shape, offset or count in messages and listings.
inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Elements of a tensor or box of this shape.
inline int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace tessera::ckpt
