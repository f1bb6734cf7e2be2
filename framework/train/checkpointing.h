// The training state in checkpoints: what this rank writes (the pieces it owns) and
// what it reads to resume (the boxes it needs), for any parallel layout.
//
// Written once per model replica: parameters and AdamW moments by data-parallel rank 0
// (under ZeRO-1 each dp rank writes the moments of its own range), tensor-parallel
// slices by their tp rank, replicated tensors by tp rank 0, each pipeline stage its own
// layers (the last stage's tied copy of wte is not written). Every piece is a box of a
// logical tensor (framework/model/params.h, logical_boxes), so a checkpoint does not
// depend on the layout that wrote it, and any layout reads back exactly its own slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "framework/data/loader.h"
#include "framework/recipe/recipe.h"
#include "framework/runlog/run_log.h"

namespace tessera {

// n floats of a backend's memory as host memory, for checkpoint I/O: the memory itself
// where the backend computes on the host (no copy), else a host copy that download()
// fills before a save and upload() writes back after a load.
class HostMirror {
 public:
  HostMirror(kernels::Backend& backend, float* data, int64_t n);
  float* get() { return mirrored() ? copy_.data() : data_; }
  void download();
  void upload();

 private:
  bool mirrored() const { return !backend_.computes_on_host(); }
  kernels::Backend& backend_;
  float* data_;
  int64_t n_;
  std::vector<float> copy_;
};

// The training state (parameters, AdamW moments) as host memory, mirrored on a GPU.
struct HostTrainingState {
  HostTrainingState(GPTModel& model, AdamW& adamw);
  void download();
  void upload();
  HostMirror params, m, v;
};

// This rank's pieces: parameters and moments ("<name>.adam_m", "<name>.adam_v"), pointing
// into `host` (downloaded).
std::vector<TensorPiece> training_state_pieces(GPTModel& model, AdamW& adamw,
                                               HostTrainingState& host, int dp_rank);

// Where this rank's parameters (not the moments) come from in a checkpoint: every local
// slice, a tied copy from the tensor it copies. For inference (tessera generate). Into
// `params` where given (a host mirror of params(), which the caller uploads after the
// load), else into params() itself (a model that computes on the host).
std::vector<TensorDest> parameter_dests(GPTModel& model, float* params = nullptr);

// A checkpoint's identity: XXH64 over its shards' checksums ("xxh64:<16 hex>"). A LoRA
// checkpoint records its base model's, and refuses a base that no longer matches.
std::string checkpoint_fingerprint(const LoadedCheckpoint& checkpoint);

// Where this rank's base-model weights come from: under LoRA the frozen base (the
// adapters are parameter_dests), otherwise the same as parameter_dests. Into `base` where
// given (a host mirror of base_params()), else into base_params() itself.
std::vector<TensorDest> base_parameter_dests(GPTModel& model, float* base = nullptr);

// Where this rank's parameters and moments come from in a checkpoint: every local slice
// (a tied copy from the tensor it copies), the moments of its range under ZeRO-1.
// Into `host`, which the caller uploads after the load.
std::vector<TensorDest> training_state_dests(GPTModel& model, AdamW& adamw, HostTrainingState& host);

// The trainer's checkpoints: synchronous, or with checkpoint.async written by a background
// thread while training goes on (at most one in flight: the next save waits for it).
// Every method is collective over `world` (every rank of the job). Each published checkpoint becomes a
// `checkpoint` event in the run log (path, step, bytes, seconds from start to publish,
// stall_seconds the training loop spent in it, peak_rss_mb of the worst rank after it,
// checksums per shard file).
class TrainingCheckpoints {
 public:
  TrainingCheckpoints(const Recipe& recipe, std::string run_id, RunLog& log, bool print,
                      Communicator& world);
  ~TrainingCheckpoints();

  // A checkpoint of the state after `step`: first waits for the one in flight, if any.
  // `extra` goes into the checkpoint's metadata (the loss scale, the LoRA base, ...).
  void save(int64_t step, GPTModel& model, AdamW& adamw, const DataLoader& loader, int dp_rank,
            int world_size, const nlohmann::json& extra = nlohmann::json::object());
  // Publishes the save in flight once every rank has written its shard; cheap otherwise.
  void poll();
  // Waits for the save in flight and publishes it.
  void wait();

  int64_t last_step() const { return last_step_; }  // the newest save started; -1: none
  const std::string& last_path() const { return last_path_; }  // the newest published

 private:
  void publish();

  const Recipe& recipe_;
  std::string run_id_;
  RunLog& log_;
  bool print_;
  Communicator& world_;
  std::unique_ptr<CheckpointSave> in_flight_;
  double stall_seconds_ = 0;  // of the save in flight, so far
  int64_t last_step_ = -1;
  std::string last_path_;
};

// The checkpoint that checkpoint.resume names, or "" to start fresh: `none` gives "";
// `auto` the newest complete checkpoint in checkpoint.dir if it has one, else ""; a path
// that checkpoint (a step directory, or a directory with `latest`), which must exist.
// Throws tessera::Error naming the key for a path that is not a checkpoint.
std::string resume_source(const Recipe& recipe);

// Resumes from `path`: every rank reads the boxes of its own parameters and moments
// (training_state_dests), whatever layout wrote them, checking the checksum of each box
// that is exactly one piece; then the ranks share checking every other piece, so each
// byte of the checkpoint is checked once. Collective over `world`: a fault on any rank throws the same
// tessera::Error on every rank. Returns the checkpoint's metadata (step, data position)
// and what it cost, for the run log.
struct ResumeInfo {
  std::string path;               // the step directory read
  std::string fingerprint;        // "xxh64:..." over its shards' checksums
  CheckpointMeta meta;
  double verify_seconds = 0, load_seconds = 0;  // the slowest rank's
  int64_t verified_bytes = 0;                   // read by the verification pass, all ranks
  double peak_rss_mb = 0;                       // worst rank, after loading
};
ResumeInfo resume_training_state(const std::string& path, GPTModel& model, AdamW& adamw,
                                 Communicator& world);

// LoRA: loads the frozen base weights (base_parameter_dests) from the checkpoint `path`
// (a step directory or a directory with `latest`), checked as resume_training_state
// checks. Collective; errors name lora.base.
ResumeInfo load_base_model(const std::string& path, GPTModel& model, Communicator& world);

}  // namespace tessera
