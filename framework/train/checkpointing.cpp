#include "framework/train/checkpointing.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "checkpoint/format.h"
#include "base/error.h"
#include "framework/util/memory.h"
#include "framework/util/system_info.h"
#include "parallel/collectives.h"

namespace tessera {

namespace {

// The local elements [a, b) of p that the flat range holds (empty when none).
std::pair<int64_t, int64_t> local_part(const ParamInfo& p, const FlatRange& range) {
  const int64_t a = std::max(range.lo, p.offset) - p.offset;
  const int64_t b = std::min(range.hi, p.offset + p.numel) - p.offset;
  if (b <= a) return {0, 0};
  return {a, b};
}

// Calls f(p, name suffix, local begin, local end, base, base's first flat element) for
// each tensor of this rank's training state: parameters whole, moments over the
// optimizer's range (the whole table without ZeRO-1).
template <class F>
void for_each_state_tensor(GPTModel& model, AdamW& adamw, HostTrainingState& host, F&& f) {
  const FlatRange range = adamw.range();
  for (const ParamInfo& p : model.table().params()) {
    f(p, std::string(), (int64_t)0, p.numel, host.params.get(), (int64_t)0);
    const auto [a, b] = local_part(p, range);
    f(p, std::string(".adam_m"), a, b, host.m.get(), range.lo);
    f(p, std::string(".adam_v"), a, b, host.v.get(), range.lo);
  }
}

}  // namespace

HostMirror::HostMirror(kernels::Backend& backend, float* data, int64_t n)
    : backend_(backend), data_(data), n_(n) {
  if (mirrored()) copy_.resize((size_t)n);
}

void HostMirror::download() {
  if (mirrored()) backend_.to_host(copy_.data(), data_, n_);
}

void HostMirror::upload() {
  if (mirrored()) backend_.to_device(data_, copy_.data(), n_);
}

HostTrainingState::HostTrainingState(GPTModel& model, AdamW& adamw)
    : params(model.backend(), model.params(), model.flat_size()),
      m(model.backend(), adamw.m(), adamw.range().size()),
      v(model.backend(), adamw.v(), adamw.range().size()) {}

void HostTrainingState::download() {
  params.download(), m.download(), v.download();
}

void HostTrainingState::upload() {
  params.upload(), m.upload(), v.upload();
}

std::vector<TensorPiece> training_state_pieces(GPTModel& model, AdamW& adamw,
                                               HostTrainingState& host, int dp_rank) {
  const bool zero = adamw.range().size() < model.table().total_numel();
  const int tp_rank = model.tp().rank;
  std::vector<TensorPiece> pieces;
  for_each_state_tensor(model, adamw, host, [&](const ParamInfo& p, const std::string& suffix,
                                                int64_t a, int64_t b, float* base, int64_t lo) {
    if (p.tied_copy) return;                         // the first stage writes wte
    if (!p.shard.sharded() && tp_rank != 0) return;  // replicated over tp: tp rank 0
    const bool sharded_over_dp = zero && !suffix.empty();  // ZeRO-1 moments
    if (!sharded_over_dp && dp_rank != 0) return;          // replicated over dp: dp rank 0
    for (const LogicalBox& box : logical_boxes(p, a, b))
      pieces.push_back({p.name + suffix, p.shape, box.offset, box.count,
                        base + (p.offset + box.local_begin - lo)});
  });
  return pieces;
}

namespace {

// Appends the boxes of p's local elements [a, b), held in `base` from flat element lo on,
// as destinations of the logical tensor "<p.name><suffix>".
void append_dests(std::vector<TensorDest>& dests, const ParamInfo& p, const std::string& suffix,
                  int64_t a, int64_t b, float* base, int64_t lo) {
  for (const LogicalBox& box : logical_boxes(p, a, b))
    dests.push_back({p.name + suffix, p.shape, base + (p.offset + box.local_begin - lo),
                     box.offset, box.count});
}

}  // namespace

std::vector<TensorDest> parameter_dests(GPTModel& model, float* params) {
  std::vector<TensorDest> dests;
  if (!params) params = model.params();
  for (const ParamInfo& p : model.table().params())
    append_dests(dests, p, "", 0, p.numel, params, 0);
  return dests;
}

std::string checkpoint_fingerprint(const LoadedCheckpoint& checkpoint) {
  std::string sums;
  for (const CheckpointShardInfo& shard : checkpoint.shards) sums += shard.checksum + "\n";
  return checksum_string(xxhash64(sums.data(), sums.size()));
}

std::vector<TensorDest> base_parameter_dests(GPTModel& model, float* base) {
  std::vector<TensorDest> dests;
  if (!base) base = model.base_params();
  for (const ParamInfo& p : model.base_table().params())
    append_dests(dests, p, "", 0, p.numel, base, 0);
  return dests;
}

std::vector<TensorDest> training_state_dests(GPTModel& model, AdamW& adamw, HostTrainingState& host) {
  std::vector<TensorDest> dests;
  for_each_state_tensor(model, adamw, host, [&](const ParamInfo& p, const std::string& suffix,
                                                int64_t a, int64_t b, float* base, int64_t lo) {
    append_dests(dests, p, suffix, a, b, base, lo);
  });
  return dests;
}

TrainingCheckpoints::TrainingCheckpoints(const Recipe& recipe, std::string run_id, RunLog& log,
                                         bool print, Communicator& world)
    : recipe_(recipe), run_id_(std::move(run_id)), log_(log), print_(print), world_(world) {}

// An unpublished save stays a .tmp directory (the run is failing): its thread is joined.
TrainingCheckpoints::~TrainingCheckpoints() = default;

void TrainingCheckpoints::save(int64_t step, GPTModel& model, AdamW& adamw, const DataLoader& loader,
                               int dp_rank, int world_size, const nlohmann::json& extra) {
  wait();
  const Recipe& r = recipe_;
  CheckpointMeta meta;
  meta.step = step;
  meta.tokens_seen = step * r.train.global_batch * r.model.seq_len;
  meta.data_position = loader.position();
  meta.run_id = run_id_;
  meta.recipe_yaml = recipe_to_yaml(r);
  meta.layout = {{"dp", r.parallel.dp}, {"tp", r.parallel.tp}, {"pp", r.parallel.pp},
                 {"zero", r.parallel.zero}, {"world", world_size}};
  // Initialisation is counter-based (seed, name, index) and the data order a function of
  // (seed, position): the seed is the whole random state.
  meta.rng = {{"seed", r.train.seed}};
  meta.library_version = kTesseraVersion;
  meta.extra = extra;
  // A GPU's state is copied to the host first; the save copies what it writes later.
  HostTrainingState host(model, adamw);
  host.download();
  in_flight_ = std::make_unique<CheckpointSave>(r.checkpoint.dir, meta,
                                                training_state_pieces(model, adamw, host, dp_rank),
                                                r.checkpoint.keep_last, r.checkpoint.async,
                                                &world_);
  stall_seconds_ = in_flight_->begin_seconds();
  last_step_ = step;
  if (!r.checkpoint.async) publish();
}

void TrainingCheckpoints::poll() {
  if (!in_flight_) return;
  if (all_reduce_value<int32_t>(world_, in_flight_->written() ? 1 : 0, ReduceOp::min)) publish();
}

void TrainingCheckpoints::wait() {
  if (in_flight_) publish();
}

void TrainingCheckpoints::publish() {
  const auto t0 = std::chrono::steady_clock::now();
  const SaveInfo info = in_flight_->finish();
  const int64_t step = in_flight_->step();
  in_flight_.reset();
  stall_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json checksums = nlohmann::json::object();
  for (const auto& [name, sum] : info.checksums) checksums[name] = sum;
  // every rank's high-water mark so far, the worst
  const double peak_rss = all_reduce_value(world_, peak_rss_mib(), ReduceOp::max);
  log_.checkpoint({{"path", info.path}, {"step", step}, {"bytes", info.bytes},
                   {"seconds", info.seconds}, {"stall_seconds", stall_seconds_},
                   {"peak_rss_mb", peak_rss},
                   {"async", recipe_.checkpoint.async}, {"checksums", checksums}});
  if (world_.rank() == 0 && print_) std::printf("checkpoint: %s\n", info.path.c_str());
  last_path_ = info.path;
}

std::string resume_source(const Recipe& r) {
  const std::string& resume = r.checkpoint.resume;
  if (resume == "none") return "";
  if (resume == "auto") {
    std::error_code ec;
    const auto latest = std::filesystem::path(r.checkpoint.dir) / ckpt::kLatestFile;
    if (!std::filesystem::exists(latest, ec)) return "";
    try {
      return resolve_checkpoint_dir(r.checkpoint.dir);
    } catch (const Error& e) {
      throw Error("checkpoint.resume: auto: " + std::string(e.what()));
    }
  }
  try {
    return resolve_checkpoint_dir(resume);
  } catch (const Error& e) {
    throw Error("checkpoint.resume: " + std::string(e.what()));
  }
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Every rank reads its own boxes (`dests`), checking those that are exactly one piece (all
// of them when the layout is the one that wrote the checkpoint); then the ranks share
// the reading of the pieces nobody checked, so every byte is checked once. Collective;
// a fault anywhere throws "<what>: <fault>" on every rank.
ResumeInfo load_and_verify(const std::string& path, const std::vector<TensorDest>& dests,
                           const std::string& what, Communicator& world) {
  auto max_over_ranks = [&](double x) { return all_reduce_value(world, x, ReduceOp::max); };
  auto collectively = [&](auto&& f) {
    std::string error;
    try {
      f();
    } catch (const std::exception& e) {
      error = e.what();
    }
    error = first_error_of_all(world, error);
    if (!error.empty()) throw Error(what + ": " + error);
  };
  ResumeInfo info;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<char> verified;
  collectively([&] {
    LoadedCheckpoint loaded = load_checkpoint(path, dests, true);
    info.meta = loaded.meta;
    info.path = loaded.path;
    info.fingerprint = checkpoint_fingerprint(loaded);
    verified = std::move(loaded.verified_pieces);
  });
  info.load_seconds = max_over_ranks(seconds_since(t0));
  // A piece checked by any rank is checked (every rank's list has the same length).
  std::vector<int32_t> checked(verified.begin(), verified.end());
  world.all_reduce(checked.data(), (int64_t)checked.size(), ScalarType::i32, ReduceOp::max);
  verified.assign(checked.begin(), checked.end());
  t0 = std::chrono::steady_clock::now();
  collectively([&] {
    info.verified_bytes = verify_checkpoint(path, world.rank(), world.size(), verified);
  });
  info.verify_seconds = max_over_ranks(seconds_since(t0));
  info.verified_bytes = all_reduce_value(world, info.verified_bytes, ReduceOp::sum);
  info.peak_rss_mb = max_over_ranks(peak_rss_mib());
  return info;
}

}  // namespace

ResumeInfo resume_training_state(const std::string& path, GPTModel& model, AdamW& adamw,
                                 Communicator& world) {
  HostTrainingState host(model, adamw);
  const ResumeInfo info =
      load_and_verify(path, training_state_dests(model, adamw, host), "cannot resume", world);
  host.upload();
  return info;
}

ResumeInfo load_base_model(const std::string& path, GPTModel& model, Communicator& world) {
  std::string dir;
  try {
    dir = resolve_checkpoint_dir(path);
  } catch (const Error& e) {
    throw Error("lora.base: " + std::string(e.what()));
  }
  HostMirror base(model.backend(), model.base_params(), model.base_table().total_numel());
  const ResumeInfo info = load_and_verify(dir, base_parameter_dests(model, base.get()),
                                          "lora.base: cannot load the base model", world);
  base.upload();
  return info;
}

}  // namespace tessera
