// The set-up and resume phases of a training run (see training_run.h): layout, data,
// model, optimizer, gradient buckets, resuming from a checkpoint, and run_start.
#include <omp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/data/sha256.h"
#include "framework/train/training_run.h"
#include "parallel/nccl_communicator.h"
#include "base/error.h"

namespace tessera {


namespace {

// Why checkpoints could not be written into `dir` (created if missing), or "" if they can.
std::string checkpoint_dir_problem(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "checkpoint.dir: cannot create directory '" + dir + "' (" + ec.message() + ")";
  if (access(dir.c_str(), W_OK) != 0)
    return "checkpoint.dir: directory '" + dir + "' is not writable (" + std::strerror(errno) + ")";
  return "";
}

// Opens the shards of recipe key `key` (data.train or data.val), so that every fault in
// them is found before the first step and the message says which key pointed there.
std::unique_ptr<DataLoader> open_data(const LoaderOptions& options, const std::string& key) {
  try {
    return std::make_unique<DataLoader>(options);
  } catch (const Error& e) {
    throw Error(key + ": " + e.what());
  }
}

// train.device: cuda with more than one rank: every group of the mesh (dp, tp, pp) is an
// NCCL communicator, one GPU per rank; MPI cannot reach GPU memory. Refused before any
// work, on every rank alike (printed once).
void check_device_layout(const Recipe& r) {
  if (r.train.device == Device::cpu) return;
  const ParallelConfig& p = r.parallel;
  if (p.dp * p.tp * p.pp != 1 && resolved_backend(p, r.train.device) != CommBackend::nccl)
    throw ConfigError("parallel.backend: mpi cannot reach GPU memory (train.device: cuda, "
                      "parallel.dp=" + std::to_string(p.dp) + ", tp=" + std::to_string(p.tp) +
                      ", pp=" + std::to_string(p.pp) + "); use parallel.backend: nccl or auto");
}

// The NCCL groups' options: parallel.nccl_timeout_s, and a test hook:
// TESSERA_NCCL_FAIL_AT="<world rank>:<operation>[:async]" makes that rank's NCCL operation
// number <operation> (of each of its group communicators) fail as an NCCL error would
// (with :async, as an asynchronous error that only the watchdog finds), to check that such
// a failure ends every rank (tests/gpu).
NcclOptions nccl_options(const Recipe& r, int world_rank) {
  NcclOptions options;
  options.timeout_seconds = r.parallel.nccl_timeout_s;
  // A host stuck inside NCCL or CUDA after a failure cannot throw it: the watchdog's
  // thread ends the process with the CLI's one line and exit code (the launcher then
  // ends the other ranks).
  options.on_stuck = [](const std::string& message) {
    std::fprintf(stderr, "tessera: error: %s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(2);
  };
  const char* spec = std::getenv("TESSERA_NCCL_FAIL_AT");
  int rank = -1;
  long long operation = -1;
  char mode[8] = "";
  const int fields = spec ? std::sscanf(spec, "%d:%lld:%7s", &rank, &operation, mode) : 0;
  if (fields >= 2 && rank == world_rank)
    (std::string(mode) == "async" ? options.async_error_at_operation
                                  : options.fail_at_operation) = operation;
  return options;
}

}  // namespace

TrainingRun::TrainingRun(const Recipe& recipe, const TrainOptions& options)
    : r_(recipe), options_(options) {
  set_up_layout();
  open_data_sets();
  build_model();
  build_gradient_buckets();
  resume();
  count_parameters();
  start_run_log();
}

TrainingRun::~TrainingRun() = default;

void TrainingRun::set_up_layout() {
  validate_recipe(r_);
  check_device_layout(r_);
  dp_ = r_.parallel.dp;
  // Validates the layout against the job (the same message on every rank, before any
  // communicator exists) and splits the world into dp, tp and pp groups.
  const GPTConfig model = GPTConfig::from_recipe(r_.model);
  mesh_ = std::make_unique<Mesh>(
      MPI_COMM_WORLD,
      LayoutSpec{r_.parallel.dp, r_.parallel.tp, r_.parallel.pp, r_.model.n_head, r_.model.n_embd,
                 r_.model.n_layer, r_.train.global_batch, r_.train.micro_batch,
                 model.llama() ? model.kv_heads() : 0, model.llama() ? model.mlp_width() : 0});
  // Says why a GPU cannot be used (a build without CUDA, no device) before any work, once:
  // the lowest failing rank's reason, on every rank. One GPU per process of a node.
  std::string no_device;
  try {
    backend_ = &kernels::backend_for(r_.train.device, discover_local_rank().rank);
  } catch (const std::exception& e) {
    no_device = e.what();
  }
  no_device = first_error_of_all(mesh_->world(), no_device);
  if (!no_device.empty()) throw ConfigError(no_device);
  nccl_ = resolved_backend(r_.parallel, r_.train.device) == CommBackend::nccl &&
          mesh_->world_size() > 1;
  if (nccl_) {
    const NcclOptions options = nccl_options(r_, mesh_->world_rank());
    mesh_->use_group_communicators(
        [&](Communicator& group) { return make_nccl_communicator(group, options); });
  }
  world_ = &mesh_->world();
  lead_ = world_->rank() == 0;
  B_ = r_.train.micro_batch, T_ = r_.model.seq_len;
  stage_layers_ = pipeline_stage_layers(r_);  // same error on every rank
  schedule_ = r_.parallel.schedule;
  // An unusable checkpoint directory is found now, on every rank, not after the last step.
  const std::string ckpt_problem =
      broadcast_string(*world_, lead_ ? checkpoint_dir_problem(r_.checkpoint.dir) : "", 0);
  check(ckpt_problem.empty(), ckpt_problem);
  accum_ = r_.train.global_batch / (dp_ * B_);
}

void TrainingRun::open_data_sets() {
  LoaderOptions lo;
  lo.pattern = r_.data.train;
  lo.seq_len = T_;
  lo.micro_batch = B_;
  lo.global_batch = r_.train.global_batch;
  lo.dp_rank = mesh_->dp_rank();
  lo.dp_size = dp_;
  lo.vocab_size = r_.model.vocab_size;
  lo.seed = r_.train.seed;
  train_data_ = open_data(lo, "data.train");
  if (r_.train.eval_every > 0 && !r_.data.val.empty()) {
    LoaderOptions vo = lo;
    vo.pattern = r_.data.val;
    vo.shuffle = false;
    val_data_ = open_data(vo, "data.val");
  }
}

void TrainingRun::build_model() {
  const Mesh& mesh = *mesh_;
  // ZeRO-1 (parallel.zero = 1, dp > 1): the flat buffers are padded to dp equal ranges;
  // this rank's AdamW holds the moments of its range only.
  zero_ = r_.parallel.zero == 1 && dp_ > 1;
  // This rank's pipeline stage (its layers) and tensor-parallel slices of them (tp = pp
  // = 1: the whole model), with activations for as many micro-batches as the schedule
  // keeps in flight.
  PipelineStage stage{mesh.pp_rank(), mesh.pp_size(), 0, stage_layers_[mesh.pp_rank()],
                      &mesh.pp()};
  for (int s = 0; s < mesh.pp_rank(); s++) stage.first_layer += stage_layers_[s];

  // Data-parallel ranks that share a node keep their gradients in shared memory, where
  // each rank sums its slice of every rank's buffer directly, without copies
  // (parallel/shared_memory_collectives.h; parallel.shared_memory). Every collective below
  // on model.grads() runs that way. (Not the parameters, for ZeRO-1's all-gather: the
  // passes reading the weights through shared memory's small pages cost more than the
  // all-gather saves; docs/parallel.md.)
  grad_sync_ = dp_ == 1 ? "none" : "ring";
  ModelOptions model_options = ModelOptions::from_recipe(r_);
  model_options.backend = backend_;
  model_options.print_notices = lead_;  // every rank has the same shapes: say things once
  const bool bf16_wire = r_.parallel.grad_reduce == GradReduce::bf16;
  if (dp_ > 1 && nccl_) {
    grad_sync_ = bf16_wire ? "nccl, bf16 on the wire" : "nccl";
  } else if (dp_ > 1 && bf16_wire) {
    grad_sync_ = "ring, bf16 on the wire";
  } else if (dp_ > 1 && r_.parallel.shared_memory) {
    model_options.grad_storage = [this](int64_t count) {
      std::string why_not;
      float* g = mesh_->dp().allocate_shared(count, &why_not);
      grad_sync_ = g ? "shared memory" : "ring (no shared memory: " + why_not + ")";
      return g;
    };
  }
  model_ = std::make_unique<GPTModel>(
      GPTConfig::from_recipe(r_.model), B_,
      TensorParallel{mesh.tp_rank(), mesh.tp_size(), &mesh.tp()}, zero_ ? dp_ : 1, stage,
      PipelineEngine::slots_needed(schedule_, stage.rank, stage.size, accum_), model_options);
  GPTModel& model = *model_;
  model.init_weights(r_.train.seed);
  // LoRA: the frozen base weights come from lora.base (the adapters start as initialised:
  // B = 0, so the model starts as the base model).
  if (model.has_lora()) base_ = load_base_model(r_.lora.base, model, *world_);
  // fp16: dynamic loss scaling (framework/optim/loss_scaler.h); off otherwise.
  scaler_ = std::make_unique<LossScaler>(r_.train.precision == Precision::fp16,
                                         r_.train.loss_scale, r_.train.loss_scale_window);
  engine_ = std::make_unique<PipelineEngine>(model, schedule_, accum_, B_, T_);
  shard_ = zero_ ? shard_range(model.flat_size(), dp_, mesh.dp_rank())
                 : FlatRange{0, model.table().total_numel()};
  adamw_ = std::make_unique<AdamW>(model.table(), r_.optim, shard_, *backend_);
  // A step's micro-batches (every stage of a replica reads the same).
  x_.resize((size_t)accum_ * B_ * T_);
  y_.resize((size_t)accum_ * B_ * T_);
}

// Data parallel: the gradients are all-reduced in buckets of parallel.bucket_mb, each
// started as soon as the backward pass of the step's last micro-batch has finished its
// parameters (GPTModel's grad-ready hook), so communication overlaps the rest of backward.
// Under ZeRO-1 there are no buckets: one reduce-scatter after backward (sync_gradients).
// parallel.grad_reduce = bf16: the buckets reduce with bf16 on the wire (ZeRO-1 is
// refused with it at recipe validation).
// The buckets run the communicator's queued non-blocking ring, not its helper thread:
// with one core per rank the helper thread's polling took the core from the backward
// pass (gpt2-124m dp=2 x 1 thread ran at 20 % of dp=1 x 2 threads with it, 91 % without;
// bench/parallel_bench.sh).
void TrainingRun::build_gradient_buckets() {
  GPTModel& model = *model_;
  n_params_ = (int)model.table().params().size();
  if (dp_ == 1 || zero_) return;
  const auto& params = model.table().params();
  std::vector<ParamSpan> ready_order;  // reverse table order; each span runs to the next
  for (int i = n_params_ - 1; i >= 0; i--) {  // tensor, so alignment padding is covered
    const int64_t end = i + 1 < n_params_ ? params[i + 1].offset : model.flat_size();
    ready_order.push_back({params[i].offset, end - params[i].offset});
  }
  // The micro-batch losses are already scaled by 1/dp: the buckets sum, not average.
  buckets_ = std::make_unique<GradBuckets>(
      mesh_->dp(), model.grads(), std::move(ready_order), r_.parallel.bucket_mb,
      /*average=*/false,
      r_.parallel.grad_reduce == GradReduce::bf16 ? ReduceIn::bf16 : ReduceIn::fp32);
}

// Resuming (checkpoint.resume): rank 0 decides which checkpoint, then every rank checks
// its share of it and reads its own boxes, whatever layout wrote it.
void TrainingRun::resume() {
  std::string resume_error;
  if (lead_) {
    try {
      resume_path_ = resume_source(r_);
    } catch (const Error& e) {
      resume_error = e.what();
    }
  }
  resume_error = broadcast_string(*world_, resume_error, 0);
  check(resume_error.empty(), resume_error);
  resume_path_ = broadcast_string(*world_, resume_path_, 0);
  if (resume_path_.empty()) return;
  GPTModel& model = *model_;
  resumed_ = resume_training_state(resume_path_, model, *adamw_, *world_);
  start_step_ = resumed_.meta.step;
  train_data_->set_position(resumed_.meta.data_position);
  scaler_->restore(resumed_.meta.extra.value("loss_scaler", nlohmann::json()));
  // A LoRA checkpoint holds adapters for one base model: refuse any other.
  const nlohmann::json wanted = resumed_.meta.extra.value("lora_base", nlohmann::json());
  if (model.has_lora() && wanted.is_object())
    check(wanted.value("fingerprint", "") == base_.fingerprint,
          "checkpoint.resume: " + resume_path_ + " holds adapters of the base model " +
              wanted.value("path", "?") + " (" + wanted.value("fingerprint", "?") +
              "), but lora.base " + base_.path + " is " + base_.fingerprint);
}

// What every checkpoint's metadata records beyond the tensors.
nlohmann::json TrainingRun::checkpoint_extra() const {
  nlohmann::json extra = {{"precision", to_string(r_.train.precision)}};
  if (r_.train.precision == Precision::fp16) extra["loss_scaler"] = scaler_->state();
  if (model_->has_lora())
    extra["lora_base"] = {{"path", base_.path}, {"fingerprint", base_.fingerprint}};
  return extra;
}

// The whole model's parameters: every stage's, counted over one tp and dp group.
void TrainingRun::count_parameters() {
  parameters_ = model_->num_parameters();
  trainable_ = 0;
  for (const ParamInfo& p : model_->table().params())
    if (!p.tied_copy) trainable_ += p.logical_numel();
  parameters_ = all_reduce_value(mesh_->pp(), parameters_, ReduceOp::sum);
  trainable_ = all_reduce_value(mesh_->pp(), trainable_, ReduceOp::sum);
}

void TrainingRun::start_run_log() {
  summary_.run_id = broadcast_string(*world_, lead_ ? make_run_id() : std::string(), 0);
  log_ = std::make_unique<RunLog>(r_.log.dir, summary_.run_id, lead_);
  summary_.run_log = log_->path();
  if (r_.log.tensorboard) log_->write_tensorboard();
  log_->run_start(run_start_record());
}

nlohmann::json TrainingRun::run_start_record() const {
  nlohmann::json files = nlohmann::json::array();
  if (lead_) {
    auto add = [&](const DataLoader& d, const char* split) {
      for (const auto& f : d.files())
        files.push_back({{"path", f}, {"split", split}, {"bytes", std::filesystem::file_size(f)},
                         {"sha256", sha256_file_hex(f)}});
    };
    add(*train_data_, "train");
    if (val_data_) add(*val_data_, "val");
  }
  nlohmann::json start = {{"argv", options_.argv},
                          {"recipe", recipe_to_yaml(r_)},
                          {"layout", {{"dp", dp_}, {"tp", r_.parallel.tp}, {"pp", r_.parallel.pp},
                                      {"world", world_->size()}, {"threads_per_rank", omp_get_max_threads()},
                                      {"grad_sync", grad_sync_}}},
                          {"data", {{"files", files}, {"train_tokens", train_data_->num_tokens()}}},
                          {"model", {{"parameters", parameters_},
                                     {"trainable_parameters", trainable_},
                                     {"padded_vocab_size", model_->config().padded_vocab_size},
                                     {"precision", to_string(r_.train.precision)},
                                     {"device", to_string(r_.train.device)},
                                     {"attention", model_->attention_kind()}}}};
  if (model_->has_lora())
    start["lora_base"] = {{"path", base_.path}, {"fingerprint", base_.fingerprint},
                          {"verify_seconds", base_.verify_seconds},
                          {"load_seconds", base_.load_seconds}};
  if (!resume_path_.empty())
    start["resumed_from"] = {{"path", resume_path_}, {"step", start_step_},
                             {"verify_seconds", resumed_.verify_seconds},
                             {"verified_bytes", resumed_.verified_bytes},
                             {"load_seconds", resumed_.load_seconds},
                             {"peak_rss_mb", resumed_.peak_rss_mb}};
  return start;
}

}  // namespace tessera
