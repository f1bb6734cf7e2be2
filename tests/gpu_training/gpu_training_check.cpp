// gpu_training_check: a small GPT-2 trained on the CPU backend and on the CUDA backend from
// the same counter-based initialisation on the same token batches, step by step, with the
// model, AdamW and the training step of the single-process trainer (dp = tp = pp = 1:
// framework/train/trainer.cpp's train_step without the data loader, the run log or MPI).
//
//   gpu_training_check [--steps-scale F] [--verbose]
//
// Checks (docs/cuda.md, "Training on the GPU"; tests/gpu/training_runs.py does the same
// through the `tessera` command line):
//   (a) fp32, 50 steps: every step's loss agrees to 1e-4 relative, and the gradient norm
//       of step 1 (the whole backward pass on the same weights) to 1e-6;
//   (b) bf16 on the GPU (one head of 64, so flash attention) against fp32 on the CPU,
//       200 steps: the mean loss of the last 10 steps within 2 %;
//   (c) the GPU's parameters after (a), copied to the host and loaded into a fresh CPU
//       model, give the GPU model's next-step loss (1e-4): a state that crosses devices.
//   (d) where the backend has cuDNN: bf16 with kernels.attention=cudnn against bf16 with
//       our flash kernel, 200 steps: step 1's loss within 1e-3, the mean loss of the last
//       10 steps within 1 %.
// The model: 2 layers, 64 wide, 4 heads ((b): 1 head), 32 tokens, micro-batches of 4, two
// per step, AdamW (lr 1e-3, 5 warm-up steps, cosine to 1e-4, betas 0.9 / 0.95), gradient
// clipping at 1.0. The tokens are the bytes of a text embedded below: no files.
//
// Which "GPU" is decided at link time (tests/CMakeLists.txt): gpu_training_check links the
// real CUDA backend and exits with kSkip (ctest SKIP_RETURN_CODE) when there is no usable
// GPU; gpu_training_check_emulated links the CUDA emulator's, where that is a failure.
// Links no MPI, HDF5 or yaml-cpp at run time, so it runs on a machine that has only the
// CUDA toolkit (make gpu-binaries, scripts/gpu-check.sh).
//
// --steps-scale F multiplies the step counts (for a quick look; the checks are then only
// as strong as the steps run). Exit code: 0 pass, 1 a check failed or an error, 77 skip.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/rng.h"
#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "kernels/backend.h"
#include "tests/gpu_training/check_setup.h"

namespace {

using tessera::AdamW;
using tessera::GPTModel;
using tessera::GPTConfig;
using tessera::ModelOptions;
using tessera::OptimConfig;
using tessera::gpu_check::StepBatch;
using tessera::gpu_check::batch_of_step;
namespace kernels = tessera::kernels;

constexpr int kSkip = 77;
constexpr int kB = 4, kT = 32, kMicroBatches = 2;
constexpr uint64_t kInitSeed = 1234;

struct Options {
  double steps_scale = 1.0;
  bool verbose = false;
  int steps(int n) const { return std::max(2, (int)std::lround(n * steps_scale)); }
};

std::unique_ptr<GPTModel> make_model(int n_head, kernels::Backend& backend,
                                     kernels::Dtype precision,
                                     tessera::AttentionEngine attention = {}) {
  ModelOptions options;
  options.backend = &backend;
  options.precision = precision;
  options.attention = attention;
  return std::make_unique<GPTModel>(tessera::gpu_check::small_gpt2(n_head, kT), kB,
                                    tessera::TensorParallel{}, 1, tessera::PipelineStage{}, 1,
                                    options);
}

struct RunResult {
  std::vector<double> losses, norms;  // per step
  double seconds = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// `steps` optimizer steps of the single-process trainer on `model` (initialised here).
RunResult train(GPTModel& model, int steps, const char* name, const Options& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  model.init_weights(kInitSeed);
  const OptimConfig optim = tessera::gpu_check::check_optim();
  AdamW adamw(model.table(), optim, model.backend());
  RunResult r;
  for (int step = 0; step < steps; step++) {
    const StepBatch b = batch_of_step(step, kMicroBatches, kB, kT);
    model.zero_grad();
    double loss = 0;
    for (int m = 0; m < kMicroBatches; m++)
      loss += model.forward_backward(b.inputs(m), b.targets(m), kB, kT, 1.0f / kMicroBatches);
    loss /= kMicroBatches;
    const double norm = model.grad_norm();
    if (!std::isfinite(loss) || !std::isfinite(norm))
      throw std::runtime_error(std::string(name) + ": loss " + std::to_string(loss) +
                               ", gradient norm " + std::to_string(norm) + " at step " +
                               std::to_string(step + 1));
    float* params = model.params();  // as the trainer: params() first (the 16-bit copy
    uint16_t* copy16 = model.weights16_for_full_update();  // goes stale), then AdamW's copy
    adamw.step(params, model.grads(), tessera::learning_rate(optim, step, steps), step + 1,
               tessera::clip_factor(norm, optim.grad_clip), copy16, model.options().precision);
    r.losses.push_back(loss);
    r.norms.push_back(norm);
    if (opt.verbose)
      std::printf("  %-10s step %4d  loss %.6f  norm %.6f\n", name, step + 1, loss, norm);
  }
  model.backend().synchronize();
  r.seconds = seconds_since(t0);
  std::printf("  %-10s %4d steps in %6.1f s: loss %.4f -> %.4f\n", name, steps, r.seconds,
              r.losses.front(), r.losses.back());
  std::fflush(stdout);
  return r;
}

// The loss of step `step`'s batch on the model's current parameters (no update).
double next_step_loss(GPTModel& model, int step) {
  const StepBatch b = batch_of_step(step, kMicroBatches, kB, kT);
  double loss = 0;
  for (int m = 0; m < kMicroBatches; m++) loss += model.forward(b.inputs(m), b.targets(m), kB, kT);
  return loss / kMicroBatches;
}

double relative(double a, double b) {
  return std::fabs(a - b) / std::max({std::fabs(a), std::fabs(b), 1e-30});
}

double mean_of_last(const std::vector<double>& v, int n) {
  n = std::min<int>(n, (int)v.size());
  double s = 0;
  for (int i = (int)v.size() - n; i < (int)v.size(); i++) s += v[i];
  return s / n;
}

struct Row {
  std::string check, measured, tolerance;
  bool ok;
};

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// (a) and (c): fp32 on both backends, then the GPU's parameters on a fresh CPU model.
void fp32_checks(kernels::Backend& gpu, const Options& opt, std::vector<Row>& rows) {
  const int steps = opt.steps(50);
  auto cpu_model = make_model(4, kernels::cpu_backend(), kernels::Dtype::fp32);
  auto gpu_model = make_model(4, gpu, kernels::Dtype::fp32);
  const RunResult cpu = train(*cpu_model, steps, "cpu fp32", opt);
  const RunResult dev = train(*gpu_model, steps, "gpu fp32", opt);

  double worst = 0;
  int worst_step = 0;
  for (int s = 0; s < steps; s++) {
    const double rel = relative(cpu.losses[s], dev.losses[s]);
    if (rel > worst) worst = rel, worst_step = s + 1;
  }
  rows.push_back({"(a) fp32 loss, " + std::to_string(steps) + " steps, worst rel. (step " +
                      std::to_string(worst_step) + ")",
                  fmt("%.2e", worst), "1e-4", worst <= 1e-4});
  const double norm1 = relative(cpu.norms[0], dev.norms[0]);
  rows.push_back({"(a) step-1 gradient norm, rel.", fmt("%.2e", norm1), "1e-6", norm1 <= 1e-6});
  double worst_norm = 0;
  for (int s = 0; s < steps; s++) worst_norm = std::max(worst_norm, relative(cpu.norms[s], dev.norms[s]));
  rows.push_back({"(a) gradient norms, worst rel. (info)", fmt("%.2e", worst_norm), "-", true});

  // (c): the GPU's trained parameters, through host memory, into a CPU model.
  std::vector<float> host((size_t)gpu_model->flat_size());
  gpu.to_host(host.data(), gpu_model->base_params(), gpu_model->flat_size());
  auto crossed = make_model(4, kernels::cpu_backend(), kernels::Dtype::fp32);
  if (crossed->flat_size() != gpu_model->flat_size())
    throw std::runtime_error("(c): the CPU model's flat size differs from the GPU model's");
  kernels::cpu_backend().to_device(crossed->params(), host.data(), crossed->flat_size());
  const double on_gpu = next_step_loss(*gpu_model, steps);
  const double on_cpu = next_step_loss(*crossed, steps);
  const double rel_c = relative(on_gpu, on_cpu);
  rows.push_back({"(c) GPU state on the CPU: step-" + std::to_string(steps + 1) + " loss rel.",
                  fmt("%.2e", rel_c), "1e-4", rel_c <= 1e-4});
  std::printf("  (c) step %d loss: GPU model %.7f, its parameters on the CPU %.7f, "
              "CPU-trained model %.7f\n",
              steps + 1, on_gpu, on_cpu, next_step_loss(*cpu_model, steps));
}

// (b): bf16 with flash attention on the GPU against fp32 on the CPU.
void bf16_check(kernels::Backend& gpu, const Options& opt, std::vector<Row>& rows) {
  const int steps = opt.steps(200);
  auto cpu_model = make_model(1, kernels::cpu_backend(), kernels::Dtype::fp32);
  auto gpu_model = make_model(1, gpu, kernels::Dtype::bf16);
  const std::string kind = gpu_model->attention_kind();
  rows.push_back({"(b) GPU bf16 attention kind", kind, "flash", kind == "flash"});
  const RunResult cpu = train(*cpu_model, steps, "cpu fp32", opt);
  const RunResult dev = train(*gpu_model, steps, "gpu bf16", opt);
  const double a = mean_of_last(cpu.losses, 10), b = mean_of_last(dev.losses, 10);
  const double rel = relative(a, b);
  std::printf("  (b) mean loss of the last 10 steps: CPU fp32 %.5f, GPU bf16 %.5f\n", a, b);
  double worst = 0;
  for (int s = 0; s < steps; s++) worst = std::max(worst, relative(cpu.losses[s], dev.losses[s]));
  rows.push_back({"(b) bf16 vs fp32, worst step's loss rel. (info)", fmt("%.3g %%", 100 * worst),
                  "-", true});
  rows.push_back({"(b) bf16 vs fp32, last-10 mean loss, rel.", fmt("%.3g %%", 100 * rel), "2 %",
                  rel <= 0.02});
}

// (d): bf16 with cuDNN's attention against bf16 with our flash kernel, where the backend
// has cuDNN (else the row says why, and passes: the check is about cuDNN, not its absence).
void cudnn_check(kernels::Backend& gpu, const Options& opt, std::vector<Row>& rows) {
  const std::string why = gpu.cudnn_attention_prepare(kB, kT, 64, 1);
  if (!why.empty()) {
    rows.push_back({"(d) cuDNN attention (not run: " + why + ")", "-", "-", true});
    return;
  }
  const int steps = opt.steps(200);
  auto flash_model = make_model(1, gpu, kernels::Dtype::bf16);
  auto cudnn_model = make_model(1, gpu, kernels::Dtype::bf16, tessera::AttentionEngine::cudnn);
  const std::string kind = cudnn_model->attention_kind();
  rows.push_back({"(d) GPU bf16 attention kind", kind, "cudnn", kind == "cudnn"});
  const RunResult flash = train(*flash_model, steps, "gpu flash", opt);
  const RunResult cudnn = train(*cudnn_model, steps, "gpu cudnn", opt);
  const double a = mean_of_last(flash.losses, 10), b = mean_of_last(cudnn.losses, 10);
  std::printf("  (d) mean loss of the last 10 steps: flash %.5f, cuDNN %.5f; %.1f s vs %.1f s\n",
              a, b, flash.seconds, cudnn.seconds);
  const double first = relative(flash.losses[0], cudnn.losses[0]), last = relative(a, b);
  rows.push_back({"(d) cuDNN vs flash, step 1 loss, rel.", fmt("%.2e", first), "1e-3",
                  first <= 1e-3});
  rows.push_back({"(d) cuDNN vs flash, last-10 mean loss, rel.", fmt("%.3g %%", 100 * last),
                  "1 %", last <= 0.01});
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--steps-scale" && i + 1 < argc) {
      o.steps_scale = std::atof(argv[++i]);
      if (!(o.steps_scale > 0)) throw std::runtime_error("--steps-scale: expected a number > 0");
    } else if (a == "--verbose") {
      o.verbose = true;
    } else {
      throw std::runtime_error("unknown argument '" + a +
                               "' (usage: gpu_training_check [--steps-scale F] [--verbose])");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef TESSERA_TRAINING_CHECK_EMULATED
  const char* name = "gpu_training_check (CUDA emulator)";
#else
  const char* name = "gpu_training_check";
#endif
  try {
    const Options opt = parse(argc, argv);
    kernels::Backend* gpu = nullptr;
    try {
      gpu = &kernels::cuda_backend(0);
    } catch (const std::exception& e) {
#ifdef TESSERA_TRAINING_CHECK_EMULATED
      std::printf("%s: FAIL: the emulated CUDA backend refused: %s\n", name, e.what());
      return 1;
#else
      std::printf("%s: SKIP: %s\n", name, e.what());
      return kSkip;
#endif
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Row> rows;
    std::printf("%s: GPT-2 2 layers, 64 wide, T=%d, %d x %d sequences per step\n", name, kT,
                kMicroBatches, kB);
    // Each group of checks on its own: one that throws (a CUDA or cuDNN error, a
    // non-finite loss) is a FAIL row, and the others still run and report.
    using Checks = void (*)(kernels::Backend&, const Options&, std::vector<Row>&);
    const std::pair<const char*, Checks> groups[] = {
        {"fp32 against the CPU", fp32_checks}, {"bf16 against fp32", bf16_check},
        {"cuDNN attention against ours", cudnn_check}};
    for (const auto& [what, checks] : groups) {
      try {
        checks(*gpu, opt, rows);
      } catch (const std::exception& e) {
        rows.push_back({std::string(what) + ": " + e.what(), "-", "-", false});
      }
    }

    bool ok = true;
    std::printf("\n%-48s %-12s %-9s %s\n", "check", "measured", "tolerance", "result");
    for (const Row& r : rows) {
      std::printf("%-48s %-12s %-9s %s\n", r.check.c_str(), r.measured.c_str(),
                  r.tolerance.c_str(), r.ok ? "ok" : "FAIL");
      ok = ok && r.ok;
    }
    std::printf("%s: %s in %.1f s\n", name, ok ? "PASS" : "FAIL", seconds_since(t0));
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("%s: FAIL: %s\n", name, e.what());
    return 1;
  }
}
