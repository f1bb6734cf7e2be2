// gpu_train_bench: whole training steps (forward, backward, AdamW) of a GPT-2 on the GPU,
// through the same library function as `tessera bench --device cuda`
// (framework/tools/bench.h), in a binary without MPI, HDF5 or yaml-cpp, so that it runs on
// a GPU machine that has only the CUDA toolkit (scripts/gpu-check.sh carries it there).
//
//   gpu_train_bench [--model gpt2-124m] [--seq T] [--precision bf16|fp16|fp32]
//                   [--attention own|cudnn] [--batch B] [--steps N] [--peak-tflops P]
//                   [--json FILE]
//
// --batch 0 (the default) takes the largest micro-batch that fits: 64, 48, 32, ... down to
// 1, the first whose model, activations and step run without an error. With --peak-tflops
// (the bf16 GEMM peak gpu_bench measures) it reports MFU. Exit 77: no usable GPU.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/error.h"
#include "framework/tools/bench.h"
#include "kernels/backend.h"

namespace {

using namespace tessera;

struct Options {
  std::string model = "gpt2-124m", precision = "bf16", attention = "own", json;
  int seq = 1024, batch = 0, steps = 10;
  double peak_tflops = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--model" && has_value) o.model = argv[++i];
    else if (a == "--precision" && has_value) o.precision = argv[++i];
    else if (a == "--attention" && has_value) o.attention = argv[++i];
    else if (a == "--json" && has_value) o.json = argv[++i];
    else if (a == "--seq" && has_value) o.seq = std::atoi(argv[++i]);
    else if (a == "--batch" && has_value) o.batch = std::atoi(argv[++i]);
    else if (a == "--steps" && has_value) o.steps = std::atoi(argv[++i]);
    else if (a == "--peak-tflops" && has_value) o.peak_tflops = std::atof(argv[++i]);
    else throw Error("gpu_train_bench: unknown or incomplete option '" + a + "'");
  }
  check(o.attention == "own" || o.attention == "cudnn",
        "gpu_train_bench: --attention expects own or cudnn, got '" + o.attention + "'");
  check(o.seq >= 1 && o.batch >= 0 && o.steps >= 1,
        "gpu_train_bench: --seq and --steps must be >= 1, --batch >= 0");
  return o;
}

kernels::Dtype dtype(const std::string& name) {
  if (name == "bf16") return kernels::Dtype::bf16;
  if (name == "fp16") return kernels::Dtype::fp16;
  check(name == "fp32", "gpu_train_bench: --precision expects bf16, fp16 or fp32, got '" + name + "'");
  return kernels::Dtype::fp32;
}

BenchResult run(const Options& o, int batch) {
  BenchOptions b;
  b.model = bench_model(o.model);
  b.model.seq_len = o.seq;
  b.options.precision = dtype(o.precision);
  // (Not recipe.h's from_string: its object file would bring yaml-cpp along.)
  b.options.attention = o.attention == "cudnn" ? AttentionEngine::cudnn : AttentionEngine::own;
  b.device = kernels::Device::cuda;
  b.batch = batch;
  b.seq_len = o.seq;
  b.steps = o.steps;
  return bench_training_step(b);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    try {
      kernels::cuda_backend();
    } catch (const Error& e) {
      std::printf("gpu_train_bench: SKIP: %s\n", e.what());
      return 77;
    }
    std::vector<int> tries = {o.batch};
    if (o.batch == 0) tries = {64, 48, 32, 24, 16, 12, 8, 4, 2, 1};
    for (int batch : tries) {
      BenchResult r;
      try {
        r = run(o, batch);
      } catch (const Error& e) {
        // Only running out of memory means "try a smaller one": any other error (a kernel's
        // fault, which would fail every later try too) is reported as itself.
        const std::string what = e.what();
        const bool out_of_memory = what.find("out of memory") != std::string::npos ||
                                   what.find("ALLOC_FAILED") != std::string::npos;
        if (o.batch != 0 || !out_of_memory) throw;
        std::printf("micro-batch %d does not fit: %s\n", batch, e.what());
        continue;
      }
      const double mfu = o.peak_tflops > 0 ? r.achieved_flops / (o.peak_tflops * 1e12) : 0;
      char mfu_text[64] = "";
      if (o.peak_tflops > 0)
        std::snprintf(mfu_text, sizeof mfu_text, ", MFU %.1f%% of %.0f TFLOP/s", 100 * mfu,
                      o.peak_tflops);
      std::printf("gpu_train_bench: %s %s, %s attention, micro-batch %d x %d: %.0f tokens/s, "
                  "step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f), %.1f TFLOP/s%s\n",
                  o.model.c_str(), o.precision.c_str(), o.attention.c_str(), batch, o.seq,
                  r.tokens_per_s, r.step_ms,
                  r.forward_ms, r.backward_ms, r.optimizer_ms, r.achieved_flops / 1e12, mfu_text);
      if (!o.json.empty()) {
        std::FILE* f = std::fopen(o.json.c_str(), "w");
        check(f != nullptr, "gpu_train_bench: cannot write " + o.json);
        std::fprintf(f,
                     "{\"model\": \"%s\", \"precision\": \"%s\", \"attention\": \"%s\", "
                     "\"batch\": %d, \"seq\": %d, \"tokens_per_s\": %.1f, \"step_ms\": %.3f, "
                     "\"tflops\": %.3f, \"mfu\": %.4f}\n",
                     o.model.c_str(), o.precision.c_str(), o.attention.c_str(), batch, o.seq,
                     r.tokens_per_s,
                     r.step_ms, r.achieved_flops / 1e12, mfu);
        std::fclose(f);
      }
      return 0;
    }
    throw Error("gpu_train_bench: not even micro-batch 1 fits");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_train_bench: error: %s\n", e.what());
    return 2;
  }
}
