#include "framework/train/trainer.h"

#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "framework/data/loader.h"
#include "framework/data/prepare.h"
#include "framework/data/sha256.h"
#include "framework/data/tokenizer.h"
#include "framework/model/gpt2.h"
#include "framework/optim/adamw.h"
#include "framework/optim/loss_scaler.h"
#include "framework/train/checkpointing.h"
#include "framework/train/pipeline.h"
#include "framework/util/system_info.h"
#include "framework/runlog/run_log.h"
#include "base/error.h"
#include "framework/util/memory.h"
#include "framework/util/peak.h"
#include "parallel/grad_buckets.h"
#include "parallel/mesh.h"
#include "parallel/collectives.h"

namespace tessera {

namespace {

// The global gradient norm under ZeRO-1, where this rank holds the dp-summed gradient of
// `shard` only: the shards' square sums are added over dp (the shards partition the flat
// buffer), then — as GPT2::grad_norm() does — the tp-sharded parameters' sums over tp,
// while the replicated ones (the same on every tp rank) count once.
double zero_grad_norm(GPT2& model, FlatRange shard, Communicator& dp_comm) {
  const SquareSums s = range_sum_squares(model.table(), model.grads(), shard);
  double sums[2] = {s.sharded, s.replicated};
  dp_comm.all_reduce(sums, 2, ScalarType::f64, ReduceOp::sum);
  if (model.tp().size > 1) sums[0] = all_reduce_value(*model.tp().comm, sums[0], ReduceOp::sum);
  double total = sums[0] + sums[1];  // then every pipeline stage's (tied copies left out)
  if (model.stage().size > 1) total = all_reduce_value(*model.stage().comm, total, ReduceOp::sum);
  return std::sqrt(total);
}

// Fault injection for the tests of failure handling: TESSERA_TEST_FAIL_AT="RANK:STEP" makes
// world rank RANK throw at the start of step STEP (1-based), as a real fault on one rank
// would (a bad sample, a full disk, an out-of-memory). Unset: nothing happens.
void maybe_inject_failure(int world_rank, int64_t step) {
  const char* spec = std::getenv("TESSERA_TEST_FAIL_AT");
  if (!spec || !*spec) return;
  int rank = -1;
  long long at = -1;
  check(std::sscanf(spec, "%d:%lld", &rank, &at) == 2,
        std::string("TESSERA_TEST_FAIL_AT: expected RANK:STEP, got '") + spec + "'");
  if (rank == world_rank && at == step)
    throw Error("injected failure on rank " + std::to_string(rank) + " at step " +
                std::to_string(at) + " (TESSERA_TEST_FAIL_AT)");
}

// SIGUSR1 / SIGTERM: the handler only records the signal; the training loop agrees on
// it across ranks at the end of each step (a rank may get it before the others, or alone).
volatile std::sig_atomic_t g_stop_signal = 0;
void record_stop_signal(int signo) { g_stop_signal = signo; }

// Installs the handlers for its lifetime, restoring the previous ones.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, &old_usr1_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGUSR1, &old_usr1_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  // Collective over world: the signal any rank has received so far (0: none).
  static int agreed(Communicator& world) {
    return all_reduce_value<int32_t>(world, g_stop_signal, ReduceOp::max);
  }

 private:
  struct sigaction old_usr1_ {}, old_term_ {};
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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

// Mean loss over the first train.eval_batches global batches of the validation set, in
// order (the same samples every time), split over dp ranks and micro-batches exactly as
// a training batch is, so the value does not depend on the layout (as in Megatron-LM).
double evaluate(PipelineEngine& engine, DataLoader& val, const Recipe& r, int micro_per_batch,
                std::vector<int32_t>& x, std::vector<int32_t>& y, Communicator& dp_comm) {
  const int64_t fit = std::max<int64_t>(1, val.num_samples() / r.train.global_batch);
  const int64_t batches = std::min<int64_t>(r.train.eval_batches, fit);
  const int64_t BT = (int64_t)r.train.micro_batch * r.model.seq_len;
  val.set_position(0);
  double total = 0;
  for (int64_t i = 0; i < batches; i++) {  // one global batch: micro_per_batch micro-batches
    for (int m = 0; m < micro_per_batch; m++)
      val.next_micro_batch(x.data() + m * BT, y.data() + m * BT);
    total += engine.evaluate(x.data(), y.data(), micro_per_batch);
  }
  return all_reduce_mean(dp_comm, total / (double)batches);
}

// The tokenizer that made the data (framework/data/prepare.h); null when unknown (the
// sample is then printed as token ids).
std::unique_ptr<Tokenizer> sample_tokenizer(const std::string& first_shard) {
  try {
    return data_tokenizer(first_shard);
  } catch (const Error&) {
    return nullptr;
  }
}

// Greedy continuation of `prompt` (argmax over the real vocabulary at each position).
// Collective over the model's tp and pp groups (the logits are sharded by vocabulary and
// live on the last stage).
std::vector<int32_t> greedy_sample(PipelineEngine& engine, const GPTConfig& c,
                                   std::vector<int32_t> tokens, int n) {
  for (int i = 0; i < n; i++) {
    const int T = std::min<int>((int)tokens.size(), c.seq_len);
    tokens.push_back(engine.next_token(std::vector<int32_t>(tokens.end() - T, tokens.end())));
  }
  return tokens;
}

// The progress line's end under fp16: the loss scale, or that the step was skipped.
std::string scale_note(const std::string& precision, double scale, bool applied) {
  if (precision != "fp16") return "";
  char text[96];
  std::snprintf(text, sizeof text, applied ? " | scale %g" : " | scale %g: overflow, step skipped",
                scale);
  return text;
}

}  // namespace

TrainSummary train(const Recipe& r, const TrainOptions& options) {
  validate_recipe(r);
  const int dp = r.parallel.dp;
  // Validates the layout against the job (the same message on every rank, before any
  // communicator exists) and splits the world into dp, tp and pp groups.
  const Mesh mesh(MPI_COMM_WORLD,
                  LayoutSpec{r.parallel.dp, r.parallel.tp, r.parallel.pp, r.model.n_head,
                             r.model.n_embd, r.model.n_layer, r.train.global_batch,
                             r.train.micro_batch});
  Communicator& world = mesh.world();
  const bool lead = world.rank() == 0;
  const int B = r.train.micro_batch, T = r.model.seq_len;
  const std::vector<int> stage_layers = pipeline_stage_layers(r);  // same error on every rank
  const PipelineSchedule schedule = parse_pipeline_schedule(r.parallel.schedule);
  // An unusable checkpoint directory is found now, on every rank, not after the last step.
  const std::string ckpt_problem = broadcast_string(world, lead ? checkpoint_dir_problem(r.checkpoint.dir) : "", 0);
  check(ckpt_problem.empty(), ckpt_problem);
  const int accum = r.train.global_batch / (dp * B);

  LoaderOptions lo;
  lo.pattern = r.data.train;
  lo.seq_len = T;
  lo.micro_batch = B;
  lo.global_batch = r.train.global_batch;
  lo.dp_rank = mesh.dp_rank();
  lo.dp_size = dp;
  lo.vocab_size = r.model.vocab_size;
  lo.seed = r.train.seed;
  const auto train_data = open_data(lo, "data.train");
  DataLoader& loader = *train_data;
  std::unique_ptr<DataLoader> val_data;
  if (r.train.eval_every > 0 && !r.data.val.empty()) {
    LoaderOptions vo = lo;
    vo.pattern = r.data.val;
    vo.shuffle = false;
    val_data = open_data(vo, "data.val");
  }

  // ZeRO-1 (parallel.zero = 1, dp > 1): the flat buffers are padded to dp equal ranges;
  // this rank's AdamW holds the moments of its range only.
  const bool zero = r.parallel.zero == 1 && dp > 1;
  // This rank's pipeline stage (its layers) and tensor-parallel slices of them (tp = pp
  // = 1: the whole model), with activations for as many micro-batches as the schedule
  // keeps in flight.
  PipelineStage stage{mesh.pp_rank(), mesh.pp_size(), 0, stage_layers[mesh.pp_rank()],
                      &mesh.pp()};
  for (int s = 0; s < mesh.pp_rank(); s++) stage.first_layer += stage_layers[s];

  // Data-parallel ranks that share a node keep their gradients in shared memory, where
  // each rank sums its slice of every rank's buffer directly, without copies
  // (parallel/shared_memory_collectives.h; parallel.shared_memory). Every collective below
  // on model.grads() runs that way. (Not the parameters, for ZeRO-1's all-gather: shared
  // memory has 4 KiB pages here, and the forward and backward passes reading the weights
  // through them made a gpt2-124m dp=2 step 1-2 % slower than the all-gather saves.)
  Communicator* dp_comm = &mesh.dp();
  std::string grad_sync = dp == 1 ? "none" : "ring";
  ModelOptions model_options = ModelOptions::from_recipe(r);
  if (dp > 1 && r.parallel.grad_reduce == "bf16") {
    grad_sync = "ring, bf16 on the wire";
  } else if (dp > 1 && r.parallel.shared_memory) {
    model_options.grad_storage = [&](int64_t count) {
      std::string why_not;
      float* g = dp_comm->allocate_shared(count, &why_not);
      grad_sync = g ? "shared memory" : "ring (no shared memory: " + why_not + ")";
      return g;
    };
  }
  GPT2 model(GPTConfig::from_recipe(r.model), B,
             TensorParallel{mesh.tp_rank(), mesh.tp_size(), &mesh.tp()}, zero ? dp : 1, stage,
             PipelineEngine::slots_needed(schedule, stage.rank, stage.size, accum),
             model_options);
  model.init_weights(r.train.seed);
  // LoRA: the frozen base weights come from lora.base (the adapters start as initialised:
  // B = 0, so the model starts as the base model).
  ResumeInfo base;
  if (model.has_lora()) base = load_base_model(r.lora.base, model, world);
  // fp16: dynamic loss scaling (framework/optim/loss_scaler.h); off otherwise.
  LossScaler scaler(r.train.precision == "fp16", r.train.loss_scale, r.train.loss_scale_window);
  PipelineEngine engine(model, schedule, accum, B, T);
  const FlatRange shard = zero ? shard_range(model.flat_size(), dp, mesh.dp_rank())
                               : FlatRange{0, model.table().total_numel()};
  AdamW adamw(model.table(), r.optim, shard);
  // A step's micro-batches, [accum][B * T] (every stage of a replica reads the same).
  std::vector<int32_t> x((size_t)accum * B * T), y((size_t)accum * B * T);

  // Data parallel: the gradients are all-reduced in buckets of parallel.bucket_mb, each
  // started as soon as the backward pass of the step's last micro-batch has finished its
  // parameters (GPT2's grad-ready hook), so communication overlaps the rest of backward.
  // Under ZeRO-1 there are no buckets: one reduce-scatter after backward (below).
  // parallel.grad_reduce = bf16: the buckets reduce with bf16 on the wire (ZeRO-1 is
  // refused with it at recipe validation).
  // The buckets run the communicator's queued non-blocking ring, not its helper thread:
  // with one core per rank the helper thread's polling took the core from the backward
  // pass (gpt2-124m dp=2 x 1 thread ran at 20 % of dp=1 x 2 threads with it, 91 % without;
  // bench/parallel_bench.sh).
  std::unique_ptr<GradBuckets> buckets;
  const int n_params = (int)model.table().params().size();
  if (dp > 1 && !zero) {
    const auto& params = model.table().params();
    std::vector<ParamSpan> ready_order;  // reverse table order; each span runs to the next
    for (int i = n_params - 1; i >= 0; i--) {  // tensor, so alignment padding is covered
      const int64_t end = i + 1 < n_params ? params[i + 1].offset : model.flat_size();
      ready_order.push_back({params[i].offset, end - params[i].offset});
    }
    // The micro-batch losses are already scaled by 1/dp: the buckets sum, not average.
    buckets = std::make_unique<GradBuckets>(*dp_comm, model.grads(), std::move(ready_order),
                                            r.parallel.bucket_mb, /*average=*/false,
                                            r.parallel.grad_reduce == "bf16" ? ReduceIn::bf16
                                                                             : ReduceIn::fp32);
  }

  // Resuming (checkpoint.resume): rank 0 decides which checkpoint, then every rank checks
  // its share of it and reads its own boxes, whatever layout wrote it.
  std::string resume_error, resume_path;
  if (lead) {
    try {
      resume_path = resume_source(r);
    } catch (const Error& e) {
      resume_error = e.what();
    }
  }
  resume_error = broadcast_string(world, resume_error, 0);
  check(resume_error.empty(), resume_error);
  resume_path = broadcast_string(world, resume_path, 0);
  int64_t start_step = 0;
  ResumeInfo resumed;
  if (!resume_path.empty()) {
    resumed = resume_training_state(resume_path, model, adamw, world);
    start_step = resumed.meta.step;
    loader.set_position(resumed.meta.data_position);
    scaler.restore(resumed.meta.extra.value("loss_scaler", nlohmann::json()));
    // A LoRA checkpoint holds adapters for one base model: refuse any other.
    const nlohmann::json wanted = resumed.meta.extra.value("lora_base", nlohmann::json());
    if (model.has_lora() && wanted.is_object())
      check(wanted.value("fingerprint", "") == base.fingerprint,
            "checkpoint.resume: " + resume_path + " holds adapters of the base model " +
                wanted.value("path", "?") + " (" + wanted.value("fingerprint", "?") +
                "), but lora.base " + base.path + " is " + base.fingerprint);
  }
  // What every checkpoint's metadata records beyond the tensors.
  auto checkpoint_extra = [&] {
    nlohmann::json extra = {{"precision", r.train.precision}};
    if (r.train.precision == "fp16") extra["loss_scaler"] = scaler.state();
    if (model.has_lora())
      extra["lora_base"] = {{"path", base.path}, {"fingerprint", base.fingerprint}};
    return extra;
  };

  // The whole model's parameters: every stage's, counted over one tp and dp group.
  int64_t parameters = model.num_parameters(), trainable = 0;
  for (const ParamInfo& p : model.table().params())
    if (!p.tied_copy) trainable += p.logical_numel();
  parameters = all_reduce_value(mesh.pp(), parameters, ReduceOp::sum);
  trainable = all_reduce_value(mesh.pp(), trainable, ReduceOp::sum);
  TrainSummary summary;
  summary.run_id = broadcast_string(world, lead ? make_run_id() : std::string(), 0);
  RunLog log(r.log.dir, summary.run_id, lead);
  summary.run_log = log.path();
  nlohmann::json files = nlohmann::json::array();
  if (lead) {
    auto add = [&](const DataLoader& d, const char* split) {
      for (const auto& f : d.files())
        files.push_back({{"path", f}, {"split", split}, {"bytes", std::filesystem::file_size(f)},
                         {"sha256", sha256_file_hex(f)}});
    };
    add(loader, "train");
    if (val_data) add(*val_data, "val");
  }
  nlohmann::json start = {{"argv", options.argv},
                          {"recipe", recipe_to_yaml(r)},
                          {"layout", {{"dp", dp}, {"tp", r.parallel.tp}, {"pp", r.parallel.pp},
                                      {"world", world.size()}, {"threads_per_rank", omp_get_max_threads()},
                                      {"grad_sync", grad_sync}}},
                          {"data", {{"files", files}, {"train_tokens", loader.num_tokens()}}},
                          {"model", {{"parameters", parameters},
                                     {"trainable_parameters", trainable},
                                     {"padded_vocab_size", model.config().padded_vocab_size},
                                     {"precision", r.train.precision}}}};
  if (model.has_lora())
    start["lora_base"] = {{"path", base.path}, {"fingerprint", base.fingerprint},
                          {"verify_seconds", base.verify_seconds},
                          {"load_seconds", base.load_seconds}};
  if (!resume_path.empty())
    start["resumed_from"] = {{"path", resume_path}, {"step", start_step},
                             {"verify_seconds", resumed.verify_seconds},
                             {"verified_bytes", resumed.verified_bytes},
                             {"load_seconds", resumed.load_seconds},
                             {"peak_rss_mb", resumed.peak_rss_mb}};
  log.run_start(start);

  const StopSignals stop_signals;
  try {
    const double flops_per_token = model.config().training_flops_per_token(T);
    // of all ranks' cores
    const double peak = all_reduce_value(world, measure_fp32_peak_flops(0.1), ReduceOp::sum);
    const double tokens_per_step = (double)r.train.global_batch * T;
    if (lead && options.print)
      std::printf("run %s: %s, %.2fM parameters, %d rank(s) x %d thread(s), %d micro-batch(es) "
                  "of %dx%d per step\n  log: %s\n",
                  summary.run_id.c_str(), r.source.c_str(), parameters / 1e6, world.size(),
                  omp_get_max_threads(), accum, B, T, log.path().c_str());

    if (lead && options.print && !resume_path.empty())
      std::printf("resumed from %s at step %lld\n", resume_path.c_str(), (long long)start_step);
    std::vector<double> step_rates;
    summary.steps = start_step;
    // Every run ends with its final state in its own checkpoint.dir, even a resumed one
    // with nothing left to do.
    TrainingCheckpoints checkpoints(r, summary.run_id, log, options.print, world);
    auto save = [&] {
      checkpoints.save(summary.steps, model, adamw, loader, mesh.dp_rank(), world.size(),
                       checkpoint_extra());
    };
    const int64_t last_step = r.train.exit_after_step > 0
                                  ? std::min(r.train.steps, r.train.exit_after_step)
                                  : r.train.steps;
    for (int64_t step = start_step; step < last_step; step++) {
      const auto t0 = std::chrono::steady_clock::now();
      maybe_inject_failure(world.rank(), step + 1);
      model.zero_grad();
      for (int m = 0; m < accum; m++)
        loader.next_micro_batch(x.data() + (size_t)m * B * T, y.data() + (size_t)m * B * T);
      GPT2::GradReadyHook hook;
      if (buckets) hook = [&](int i) { buckets->mark_ready(n_params - 1 - i); };
      const double loss_scale = scaler.scale();
      // This rank's share of the global batch starts at sample dp_rank * accum * B.
      double loss = engine.train_step(x.data(), y.data(),
                                      (float)(loss_scale / (double)(accum * dp)), hook,
                                      (uint64_t)step, (int64_t)mesh.dp_rank() * accum * B);
      // The tied embedding's two copies (first and last stage) get the sum of both
      // gradients: after the buckets' dp sum, or before ZeRO's reduce-scatter splits it.
      if (buckets) buckets->finish();
      if (!zero) engine.sum_tied_embedding_grads();
      if (zero) {  // this rank's range of grads() becomes the sum over dp (the rest is stale)
        engine.sum_tied_embedding_grads();
        dp_comm->reduce_scatter(model.grads(), model.grads() + shard.lo, shard.size());
      }
      loss = all_reduce_mean(mesh.dp(), loss);
      // Of the logical model: sharded parameters summed over tp, replicated counted once.
      // (of the gradient of loss_scale * loss: divided below)
      const double norm = (zero ? zero_grad_norm(model, shard, mesh.dp()) : model.grad_norm()) /
                          loss_scale;
      // fp16: an overflow on any rank skips the step on every rank (the norm is already
      // the same everywhere; the agreement makes that explicit and cheap).
      int32_t finite = std::isfinite(norm) ? 1 : 0;
      if (r.train.precision == "fp16") finite = all_reduce_value(world, finite, ReduceOp::min);
      const bool apply = scaler.update(finite == 1);
      const double lr = learning_rate(r.optim, step, r.train.steps);
      if (apply) {
        // AdamW counts the updates it made (bias correction), skipped steps not included.
        const int64_t updates = step + 1 - scaler.skipped_steps();
        float* params = model.params();  // (the 16-bit copy goes stale: written below)
        uint16_t* copy16 = zero ? nullptr : model.weights16_for_full_update();
        adamw.step(params, model.grads(), lr, updates,
                   (float)(clip_factor(norm, r.optim.grad_clip) / loss_scale), copy16,
                   model.options().precision);
        if (zero)  // every rank's updated range, to every dp rank
          dp_comm->all_gather(model.params() + shard.lo, model.params(), shard.size());
      }
      const double dt = seconds_since(t0);
      if (!std::isfinite(loss))
        throw Error("training diverged: loss is " + std::to_string(loss) + " at step " +
                    std::to_string(step + 1) + " (lower optim.lr or check the data)");

      summary.losses.push_back(loss);
      const double tps = tokens_per_step / dt, mfu = tps * flops_per_token / peak;
      if (step > start_step || last_step == start_step + 1) step_rates.push_back(tps);
      const bool report = (step + 1) % r.log.every == 0 || step + 1 == r.train.steps;
      if (report) {
        // The job's worst rank: every rank reaches this line (report is the same on all).
        const double peak_rss = all_reduce_value(world, peak_rss_mib(), ReduceOp::max);
        nlohmann::json metrics = {{"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                                  {"tokens_per_s", tps}, {"mfu", mfu}, {"step_ms", dt * 1e3},
                                  {"tokens_seen", (step + 1) * (int64_t)r.train.global_batch * T},
                                  {"peak_rss_mb", peak_rss}};
        if (r.train.precision == "fp16") {
          metrics["loss_scale"] = loss_scale;
          metrics["skipped"] = !apply;
          metrics["skipped_steps"] = scaler.skipped_steps();
        }
        if (mesh.pp_size() > 1)  // the idle fraction of the schedule, mean over the stages
          metrics["pipeline_bubble"] =
              all_reduce_mean(mesh.pp(), engine.last_times().bubble_fraction());
        log.metric(step + 1, metrics);
        if (lead && options.print)
          std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | MFU %.1f%% "
                      "| %.0f ms%s\n",
                      (long long)(step + 1), (long long)r.train.steps, loss, lr, norm, tps,
                      100 * mfu, dt * 1e3, scale_note(r.train.precision, loss_scale, apply).c_str());
      }
      const bool eval_now = val_data &&
                            ((step + 1) % r.train.eval_every == 0 || step + 1 == r.train.steps);
      if (eval_now) {
        summary.val_loss = evaluate(engine, *val_data, r, accum, x, y, mesh.dp());
        log.eval(step + 1, {{"val_loss", summary.val_loss}});
        if (lead && options.print) std::printf("step %5lld | val loss %.4f\n", (long long)(step + 1), summary.val_loss);
      }
      summary.steps = step + 1;
      checkpoints.poll();  // publishes a background save once every rank has written it
      if (r.checkpoint.every > 0 && summary.steps % r.checkpoint.every == 0) save();
      if (const int signo = StopSignals::agreed(world)) {  // preemption or the time limit
        if (checkpoints.last_step() != summary.steps) save();
        checkpoints.wait();
        summary.checkpoint = checkpoints.last_path();
        const std::string why = std::string("preempted: ") + (signo == SIGUSR1 ? "SIGUSR1" : "SIGTERM") +
                                " after step " + std::to_string(summary.steps) + "; checkpoint " +
                                summary.checkpoint;
        if (lead && options.print) std::printf("stopping: %s\n", why.c_str());
        log.run_end("interrupted", why);
        summary.preempted = true;
        return summary;
      }
    }
    if (checkpoints.last_step() != summary.steps) save();
    checkpoints.wait();
    summary.checkpoint = checkpoints.last_path();
    if (!step_rates.empty()) {
      std::nth_element(step_rates.begin(), step_rates.begin() + step_rates.size() / 2,
                       step_rates.end());
      summary.tokens_per_s = step_rates[step_rates.size() / 2];
      summary.mfu = summary.tokens_per_s * flops_per_token / peak;
    }

    // Rank 0's replica samples: its tp groups (the logits are sharded) and pp stages.
    if (mesh.dp_rank() == 0 && r.train.sample_tokens > 0) {
      const auto tokenizer = sample_tokenizer(loader.files().front());
      std::vector<int32_t> prompt(x.begin(), x.begin() + std::max(1, std::min(T / 2, 16)));
      const auto out = greedy_sample(engine, model.config(), prompt, r.train.sample_tokens);
      if (tokenizer) {
        summary.sample = tokenizer->decode(std::vector<int>(out.begin(), out.end()));
      } else {
        for (int32_t t : out) summary.sample += std::to_string(t) + " ";
      }
      if (lead && options.print) std::printf("sample (greedy, prompt of %zu tokens):\n%s\n", prompt.size(), summary.sample.c_str());
    }
  } catch (const std::exception& e) {
    log.run_end("failed", e.what());
    throw;
  }
  log.run_end("ok", "");
  return summary;
}

}  // namespace tessera
