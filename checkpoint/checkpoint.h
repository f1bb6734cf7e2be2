// HDF5 checkpoints: one directory per step, written atomically.
//
//   <dir>/step_000200/index.h5        metadata + every logical tensor as a virtual dataset
//   <dir>/step_000200/rank_00000.h5   the tensors themselves (one file per writing rank)
//   <dir>/latest                      "step_000200": the newest complete checkpoint
//
// checkpoint/ knows nothing of framework/ (the framework uses it, not the reverse): the
// caller describes its tensors as plain (logical name, shape, pointer) lists. The format
// is documented in docs/checkpoints.md.
//
// For now every rank holds the full tensors (pure data parallelism), so rank 0 writes the
// single shard file. The index already maps each logical tensor onto its shard through a
// virtual dataset, so per-rank shards for tensor/pipeline parallelism only change what
// the writer puts into those mappings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera {

// A full logical tensor held by this rank (fp32, C order).
struct TensorRef {
  std::string name;              // logical name, e.g. "h.0.attn.qkv.weight.adam_m"
  std::vector<int64_t> shape;    // logical shape; at least one dimension, all > 0
  const float* data = nullptr;   // numel floats
};

struct CheckpointMeta {
  int64_t step = 0;              // optimizer steps completed
  int64_t tokens_seen = 0;
  int64_t data_position = 0;     // DataLoader::position() to resume the data stream
  std::string run_id;
  std::string recipe_yaml;       // the fully resolved recipe
  nlohmann::json layout;         // {"dp", "tp", "pp", "world", ...}
};

// What a save wrote, for the run log.
struct SaveInfo {
  std::string path;                                        // <dir>/step_XXXXXX
  int64_t bytes = 0;                                       // tensor bytes written
  double seconds = 0;                                      // from call to `latest` updated
  std::vector<std::pair<std::string, std::string>> checksums;  // name -> "fnv1a64:<16 hex>"
};

// Writes a checkpoint of `tensors` at meta.step and returns its final directory
// "<dir>/step_XXXXXX". Collective over MPI_COMM_WORLD: every rank calls it with the same
// meta and tensor list (when MPI is not initialised the caller is a single rank).
//
// The files go into "<dir>/step_XXXXXX.tmp-<run_id>/" and are fsync'd; only when every rank
// has finished is it renamed to "<dir>/step_XXXXXX" (replacing an older directory of the
// same step), then "<dir>/latest" is replaced by rename, then complete checkpoints beyond
// the newest `keep_last` are deleted (keep_last <= 0 keeps all). Any failure (bad input,
// disk full, permissions) removes the .tmp directory and throws tessera::Error with the
// same one-line message on every rank; no rank hangs.
std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta,
                            const std::vector<TensorRef>& tensors, int keep_last,
                            SaveInfo* info = nullptr);

// Where load_checkpoint puts one logical tensor.
struct TensorDest {
  std::string name;
  std::vector<int64_t> shape;    // expected shape; a different one in the checkpoint is an Error
  float* data = nullptr;         // numel floats
};

struct CheckpointTensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::string checksum;          // "fnv1a64:<16 hex>"
};

struct LoadedCheckpoint {
  std::string path;              // the step directory that was read
  CheckpointMeta meta;
  std::vector<CheckpointTensorInfo> tensors;  // everything in the index, in name order
};

// Reads a checkpoint: `path` is a step directory or a parent directory holding `latest`.
// Verifies that every shard file the index maps onto exists and opens (HDF5 would read a
// missing shard silently as fill values), reads every tensor through the index and
// checks its checksum, and copies each tensor named in `outputs` to its destination.
// A missing, partial (.tmp), truncated or corrupt checkpoint, an absent tensor or a shape
// mismatch throws tessera::Error naming the file and the fault. Not collective: any
// process may call it. On error, destinations may have been partly written.
LoadedCheckpoint load_checkpoint(const std::string& path, const std::vector<TensorDest>& outputs);

// The step directory `path` refers to: itself if it holds index.h5, else the directory
// named by `path/latest`. Throws tessera::Error when neither, or for a .tmp directory.
std::string resolve_checkpoint_dir(const std::string& path);

// FNV-1a, 64 bit, over raw bytes (here: little-endian float32 in C order). Simple enough
// to recompute in a few lines of Python (tests/reference/check_checkpoint.py does).
uint64_t fnv1a64(const void* data, size_t bytes);
std::string checksum_string(const float* data, size_t numel);  // "fnv1a64:<16 hex>"

// "step_000200" for step 200 (more digits beyond 999999).
std::string checkpoint_dir_name(int64_t step);

}  // namespace tessera
