// HDF5 checkpoints: one directory per step, each rank writing only what it owns,
// published atomically.
//
//   <dir>/step_000200/rank_00003.h5   the pieces world rank 3 owns (boxes of logical tensors)
//   <dir>/step_000200/index.h5        metadata, the list of shards and pieces with their
//                                     checksums, and every logical tensor as one virtual
//                                     dataset mapped onto the pieces in the shard files
//   <dir>/latest                      "step_000200": the newest complete checkpoint
//
// checkpoint/ knows nothing of framework/ (the framework uses it, not the reverse): the
// caller describes what it writes as pieces (logical name, full logical shape, the box it
// holds, a pointer) and what it reads as boxes to fill. Any parallel layout can read any
// checkpoint: each rank reads the boxes it needs through the index. The format is
// documented in docs/checkpoints.md.
#pragma once
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/communicator.h"

namespace tessera {

// A box of a logical tensor that this rank writes (fp32, C order): elements
// offset[d] .. offset[d] + count[d] - 1 along each dimension d of the logical tensor.
// Across all ranks the pieces of one tensor must cover it exactly once.
struct TensorPiece {
  std::string name;               // logical name, e.g. "h.0.attn.qkv.weight.adam_m"
  std::vector<int64_t> shape;     // the logical tensor's shape; >= 1 dimension, all > 0
  std::vector<int64_t> offset;    // empty: all zeros
  std::vector<int64_t> count;     // empty: the whole shape
  const float* data = nullptr;    // prod(count) floats
};

struct CheckpointMeta {
  int64_t step = 0;               // optimizer steps completed
  int64_t tokens_seen = 0;
  int64_t data_position = 0;      // DataLoader::position() to resume the data stream
  std::string run_id;
  std::string recipe_yaml;        // the fully resolved recipe
  nlohmann::json layout;          // {"dp", "tp", "pp", "world", ...}
  nlohmann::json rng;             // every random stream's state, e.g. {"seed": 1337}
  nlohmann::json extra;           // anything else the trainer needs to resume
  std::string library_version;    // of the writer
};

// What a save wrote, for the run log.
struct SaveInfo {
  std::string path;                                        // <dir>/step_XXXXXX
  int64_t bytes = 0;                                       // tensor bytes, all ranks
  double seconds = 0;                                      // from call to `latest` updated
  std::vector<std::pair<std::string, std::string>> checksums;  // shard file -> "xxh64:<16 hex>"
};

// Writes a checkpoint at meta.step and returns its final directory "<dir>/step_XXXXXX".
// Collective over `world` (every rank of the job; null: this process alone): every rank
// calls it with the same dir, meta and keep_last, and its own pieces (possibly none).
//
// Rank 0 creates "<dir>/step_XXXXXX.tmp-<run_id>/"; every rank with pieces writes and
// fsyncs its rank_XXXXX.h5 there; rank 0 checks that the pieces cover every tensor exactly
// once and writes index.h5; only when every rank has finished is the directory renamed to
// "<dir>/step_XXXXXX" (replacing an older directory of the same step), then
// "<dir>/latest" is replaced by rename, then complete checkpoints beyond the newest
// `keep_last` are deleted (keep_last <= 0 keeps all). Any failure (bad input, disk full,
// permissions) removes the .tmp directory and throws tessera::Error with the same
// one-line message on every rank; no rank hangs.
std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta,
                            const std::vector<TensorPiece>& pieces, int keep_last,
                            SaveInfo* info = nullptr, Communicator* world = nullptr);

// save_checkpoint in two halves, so that the data can be written while training goes on
// (checkpoint.async). Both halves are collective over `world` (null: this process alone).
//
//   CheckpointSave save(dir, meta, pieces, keep_last, /*async=*/true);  // copies, returns
//   ... training steps; each step: all ranks' save.written() agree? then:
//   SaveInfo info = save.finish();                                      // index, publish
//
// The constructor validates, has rank 0 create the .tmp directory, and writes this rank's
// shard: at once (async = false), or from a private copy of the pieces in a background
// thread, so that the caller may change its buffers as soon as it returns (the copy is
// this rank's shard size: the only extra memory). The thread does not communicate. finish()
// waits for this rank's shard, then does the rest of save_checkpoint. Destroying an
// unfinished save waits for its thread and leaves the .tmp directory, as a crash would.
class CheckpointSave {
 public:
  CheckpointSave(const std::string& dir, const CheckpointMeta& meta,
                 const std::vector<TensorPiece>& pieces, int keep_last, bool async,
                 Communicator* world = nullptr);
  ~CheckpointSave();
  CheckpointSave(const CheckpointSave&) = delete;
  CheckpointSave& operator=(const CheckpointSave&) = delete;

  bool written() const { return written_; }  // this rank's shard is done (or failed); not collective
  SaveInfo finish();
  int64_t step() const { return meta_.step; }
  double begin_seconds() const { return begin_seconds_; }  // the constructor's time

 private:
  void write_this_rank();

  std::string dir_;
  CheckpointMeta meta_;
  int keep_last_;
  Communicator& world_;
  int rank_ = 0;
  std::vector<TensorPiece> pieces_;
  std::vector<std::vector<float>> copies_;  // async: the pieces' data
  std::string error_;                       // this rank's shard write
  nlohmann::json shard_;                    // its description, for the index
  std::atomic<bool> written_{false};
  std::thread writer_;
  bool finished_ = false;
  double begin_seconds_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// A box of a logical tensor to read (offset/count empty: the whole tensor).
struct TensorDest {
  std::string name;
  std::vector<int64_t> shape;     // expected logical shape; another one in the checkpoint is an Error
  float* data = nullptr;          // prod(count) floats
  std::vector<int64_t> offset, count;
};

struct CheckpointTensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  int pieces = 0;                 // how many pieces (shard datasets) it is stored in
};

struct CheckpointShardInfo {
  std::string file;               // "rank_00003.h5"
  int rank = 0;
  int64_t bytes = 0;              // tensor bytes
  std::string checksum;           // over all its pieces' bytes, in order
  int pieces = 0;
};

struct LoadedCheckpoint {
  std::string path;               // the step directory that was read
  CheckpointMeta meta;
  std::vector<CheckpointTensorInfo> tensors;  // everything in the index, in name order
  std::vector<CheckpointShardInfo> shards;
  // With load_checkpoint(..., verify_exact_pieces): per piece of the index (shards in
  // order, their pieces in order), 1 if a destination was exactly that piece and its
  // data matched the piece's checksum.
  std::vector<char> verified_pieces;
};

// Reads a checkpoint's index and fills each destination box through it: `path` is a step
// directory or a parent directory holding `latest`. Checks that every shard file the
// index lists exists and opens as HDF5 (HDF5 would read a missing virtual-dataset source
// silently as fill values) and holds its pieces, but reads only the requested boxes: the
// data's checksums are verify_checkpoint's job. A missing, partial (.tmp) or truncated
// checkpoint, an absent tensor, a shape mismatch or a box outside the tensor throws
// tessera::Error naming the file and the fault. Not collective. On error, destinations
// may have been partly written. With verify_exact_pieces, a destination box that is
// exactly one piece (a resume in the layout that wrote the checkpoint) is hashed after
// reading and checked against that piece's checksum, so verify_checkpoint can skip it.
LoadedCheckpoint load_checkpoint(const std::string& path, const std::vector<TensorDest>& outputs,
                                 bool verify_exact_pieces = false);

// A checkpoint opened once and read tensor by tensor (an export holds one tensor at a
// time): the index and every shard file are opened and checked up front, as
// load_checkpoint does, and each read() fills one box through the index. Not collective.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path, bool verify_exact_pieces = false);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const LoadedCheckpoint& info() const;  // verified_pieces grows with each read
  // The tensor's entry in the index; throws tessera::Error naming the index when absent.
  const CheckpointTensorInfo& tensor(const std::string& name) const;
  void read(const TensorDest& box);
  std::vector<float> read_tensor(const std::string& name);  // the whole tensor

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Reads the pieces numbered part, part + parts, ... (in the index's order: shards in order,
// their pieces in order) and checks each against its checksum; checks the checksums of the
// shards numbered the same way against their pieces'; returns the bytes read. With (0, 1)
// one process checks everything; P ranks calling it with (rank, P) share the work. Pieces
// marked in `skip` (LoadedCheckpoint::verified_pieces) are not read again. Throws
// tessera::Error naming the shard file and the piece on the first fault.
int64_t verify_checkpoint(const std::string& path, int part = 0, int parts = 1,
                          const std::vector<char>& skip = {});

// The step directory `path` refers to: itself if it holds index.h5, else the directory
// named by `path/latest`. Throws tessera::Error when neither, or for a .tmp directory.
std::string resolve_checkpoint_dir(const std::string& path);

// XXH64 (xxHash, 64 bit, seed 0) over raw bytes (here: little-endian float32 in C order):
// the checksum of every piece. Python: xxhash.xxh64(array.tobytes()) (python3-xxhash).
uint64_t xxhash64(const void* data, size_t bytes, uint64_t seed = 0);
std::string checksum_string(uint64_t hash);                     // "xxh64:<16 hex>"
std::string checksum_string(const float* data, size_t numel);
// A shard's checksum: XXH64 of its pieces' 64-bit checksums, in order, as little-endian
// bytes ("xxh64:<16 hex>").
std::string shard_checksum(const std::vector<uint64_t>& piece_hashes);

// "step_000200" for step 200 (more digits beyond 999999).
std::string checkpoint_dir_name(int64_t step);

}  // namespace tessera
