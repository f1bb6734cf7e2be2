// gpu_layout_check: a parallel layout on GPUs over NCCL against one GPU, step by step,
// without MPI (the GPU check machine has none).
//
//   gpu_layout_check --dp D --tp T --pp P [--schedule gpipe|1f1b] [--zero] [--steps N]
//
// Started as D*T*P processes that find each other through a file
// (tests/nccl/file_bootstrap.h: scripts/gpu-check.sh on a GPU machine, mpirun for the
// emulated build in CI); each takes GPU (rank % GPUs), so they may share one. Every
// process first trains the one-GPU reference (the whole model, no communicator), then its
// part of the layout with the trainer's step (framework/train/trainer.cpp): the
// PipelineEngine's forward and backward over its micro-batches, the dp sum (or ZeRO-1's
// reduce-scatter) and the tied embedding's sum, the global gradient norm, AdamW (on the
// ZeRO-1 shard, then its all-gather). Rank 0 compares every step's loss and gradient norm
// with the reference's (fp32: 1e-5 relative) and prints the verdict.
// The dp sum is one all-reduce after the backward pass, not the trainer's buckets during
// it: the same sums (tests/gpu/nccl_training_runs.py runs the trainer itself on the
// emulators). The model: check_setup.h's GPT-2 with 4 heads, T = 32, a step of 4
// micro-batches of 2 sequences; its AdamW.
// Exit code: 0 pass, 1 a check failed or an error, 77 no GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "framework/train/pipeline.h"
#include "framework/train/zero.h"
#include "kernels/backend.h"
#include "parallel/collectives.h"
#include "parallel/pipeline_schedule.h"
#include "tests/gpu_training/check_setup.h"
#include "tests/nccl/file_bootstrap.h"

namespace tessera {
namespace {

constexpr int kSkip = 77;
constexpr int kB = 2, kT = 32, kMicroBatches = 4;
constexpr uint64_t kInitSeed = 1234;
constexpr double kTolerance = 1e-5;

struct Layout {
  int dp = 1, tp = 1, pp = 1;
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  bool zero = false;
  int steps = 10;
  std::string text() const {
    return "dp=" + std::to_string(dp) + " tp=" + std::to_string(tp) + " pp=" + std::to_string(pp) +
           (pp > 1 ? schedule == PipelineSchedule::GPipe ? " gpipe" : " 1f1b" : "") +
           (zero ? " zero-1" : "");
  }
};

// This process's place in the layout (ranks: tp fastest, then dp, then pp, as the mesh's)
// and its groups (NCCL communicators, of one rank where the layout has one on that axis;
// none for the one-GPU reference).
struct Place {
  int tp_rank = 0, dp_rank = 0, pp_rank = 0;
  std::unique_ptr<Communicator> tp, dp, pp;
};

Place place_of(int rank, const Layout& l, Communicator* world) {
  Place p;
  p.tp_rank = rank % l.tp;
  p.dp_rank = rank / l.tp % l.dp;
  p.pp_rank = rank / (l.tp * l.dp);
  if (!world) return p;
  // One group per axis: the ranks that agree on the other two coordinates.
  p.tp = nccl_group(*world, p.pp_rank * l.dp + p.dp_rank);
  p.dp = nccl_group(*world, p.pp_rank * l.tp + p.tp_rank);
  p.pp = nccl_group(*world, p.dp_rank * l.tp + p.tp_rank);
  return p;
}

struct Series {
  std::vector<double> losses, norms;
};

// `l.steps` optimizer steps of this process's part of layout `l` (place p), as the
// trainer runs them; every process returns the global losses and norms.
Series train(const Layout& l, Place& p, kernels::Backend& gpu) {
  const int accum = kMicroBatches / l.dp;
  const bool zero = l.zero && l.dp > 1;
  const GPTConfig config = gpu_check::small_gpt2(4, kT);
  const std::vector<int> layers = stage_layer_counts(config.n_layer, l.pp);
  PipelineStage stage{p.pp_rank, l.pp, 0, layers[(size_t)p.pp_rank], p.pp.get()};
  for (int s = 0; s < p.pp_rank; s++) stage.first_layer += layers[(size_t)s];
  ModelOptions options;
  options.backend = &gpu;
  GPTModel model(config, kB, TensorParallel{p.tp_rank, l.tp, p.tp.get()}, zero ? l.dp : 1, stage,
                 PipelineEngine::slots_needed(l.schedule, p.pp_rank, l.pp, accum), options);
  model.init_weights(kInitSeed);
  PipelineEngine engine(model, l.schedule, accum, kB, kT);
  const OptimConfig optim = gpu_check::check_optim();
  const FlatRange shard = zero ? shard_range(model.flat_size(), l.dp, p.dp_rank)
                               : FlatRange{0, model.table().total_numel()};
  AdamW adamw(model.table(), optim, shard, gpu);
  Series out;
  for (int step = 0; step < l.steps; step++) {
    const gpu_check::StepBatch b = gpu_check::batch_of_step(step, kMicroBatches, kB, kT);
    const int first = p.dp_rank * accum;  // this dp rank's share of the step's micro-batches
    model.zero_grad();
    double loss = engine.train_step(b.inputs(first), b.targets(first),
                                    1.0f / (float)(accum * l.dp), nullptr, (uint64_t)step,
                                    (int64_t)first * kB);
    if (zero) {  // the tied copies' sum first, then this rank's range summed over dp
      engine.sum_tied_embedding_grads();
      p.dp->reduce_scatter(model.grads(), model.grads() + shard.lo, shard.size());
    } else {
      if (l.dp > 1) p.dp->all_reduce(model.grads(), model.flat_size());
      engine.sum_tied_embedding_grads();
    }
    if (l.dp > 1) loss = all_reduce_mean(*p.dp, loss);
    const double norm = zero ? zero_grad_norm(model, shard, *p.dp) : model.grad_norm();
    float* params = model.params();
    uint16_t* copy16 = zero ? nullptr : model.weights16_for_full_update();
    adamw.step(params, model.grads(), learning_rate(optim, step, l.steps), step + 1,
               clip_factor(norm, optim.grad_clip), copy16, model.options().precision);
    if (zero) p.dp->all_gather(model.params() + shard.lo, model.params(), shard.size());
    out.losses.push_back(loss);
    out.norms.push_back(norm);
  }
  gpu.synchronize();
  return out;
}

double relative(double a, double b) {
  return std::fabs(a - b) / std::max({std::fabs(a), std::fabs(b), 1e-30});
}

// Rank 0's report: the worst step of each series; true if both are within tolerance.
bool report(const Layout& l, const Series& ref, const Series& got, bool verbose) {
  double worst_loss = 0, worst_norm = 0;
  for (int s = 0; s < l.steps; s++) {
    worst_loss = std::max(worst_loss, relative(ref.losses[s], got.losses[s]));
    worst_norm = std::max(worst_norm, relative(ref.norms[s], got.norms[s]));
    if (verbose)
      std::printf("  step %2d  loss %.7f vs %.7f  norm %.7f vs %.7f\n", s + 1, got.losses[s],
                  ref.losses[s], got.norms[s], ref.norms[s]);
  }
  const bool ok = worst_loss <= kTolerance && worst_norm <= kTolerance &&
                  ref.losses.back() < ref.losses.front();  // and the reference learns
  std::printf("gpu_layout_check: %s: %s: %d steps against one GPU, worst relative difference: "
              "loss %.1e, gradient norm %.1e (tolerance %.0e); loss %.4f -> %.4f\n",
              l.text().c_str(), ok ? "PASS" : "FAIL", l.steps, worst_loss, worst_norm,
              kTolerance, got.losses.front(), got.losses.back());
  return ok;
}

Layout parse(int argc, char** argv, bool* verbose) {
  Layout l;
  auto number = [&](int& i, const std::string& flag) {
    if (i + 1 >= argc) throw Error(flag + ": expected a number");
    const int x = std::atoi(argv[++i]);
    if (x < 1) throw Error(flag + ": expected a number >= 1, got '" + argv[i] + "'");
    return x;
  };
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--dp") l.dp = number(i, a);
    else if (a == "--tp") l.tp = number(i, a);
    else if (a == "--pp") l.pp = number(i, a);
    else if (a == "--steps") l.steps = number(i, a);
    else if (a == "--zero") l.zero = true;
    else if (a == "--verbose") *verbose = true;
    else if (a == "--schedule" && i + 1 < argc) l.schedule = parse_pipeline_schedule(argv[++i]);
    else
      throw Error("unknown argument '" + a + "' (usage: gpu_layout_check --dp D --tp T --pp P "
                  "[--schedule gpipe|1f1b] [--zero] [--steps N] [--verbose])");
  }
  if (kMicroBatches % l.dp != 0) throw Error("--dp must divide the step's 4 micro-batches");
  return l;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  ProcessGroup processes;
  try {
    processes = start_processes(&argc, &argv);
    bool verbose = false;
    const Layout layout = parse(argc, argv, &verbose);
    if (layout.dp * layout.tp * layout.pp != processes.size)
      throw Error(layout.text() + " needs " + std::to_string(layout.dp * layout.tp * layout.pp) +
                  " processes; " + std::to_string(processes.size) + " were started");
    kernels::Backend* gpu = nullptr;
    try {
      gpu = &kernels::cuda_backend(processes.rank);
    } catch (const std::exception& e) {
      std::printf("gpu_layout_check: SKIP: %s\n", e.what());
      finish_processes();
      return kSkip;
    }
    Layout one = layout;
    one.dp = one.tp = one.pp = 1;
    Place alone = place_of(0, one, nullptr);
    const Series ref = train(one, alone, *gpu);
    std::unique_ptr<Communicator> world = nccl_world(processes);
    Place place = place_of(processes.rank, layout, world.get());
    const Series got = train(layout, place, *gpu);
    int32_t ok = processes.rank != 0 || report(layout, ref, got, verbose);
    world->all_reduce(&ok, 1, ScalarType::i32, ReduceOp::min);
    place = Place{};
    world.reset();
    finish_processes();
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("gpu_layout_check rank %d: FAIL: %s\n", processes.rank, e.what());
    return 1;
  }
}
