// tessera bench [--model tiny|small|gpt2-124m|llama-114m] [--batch B] [--seq T] [--steps N] [--warmup W]
//               [--device cpu|cuda] [--json]
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/tools/bench.h"

namespace tessera::cli {

static const char* kBenchUsage =
    "usage: tessera bench [--model tiny|small|gpt2-124m|llama-114m] [--batch B] [--seq T]\n"
    "                     [--steps N] [--warmup W] [--accum M] [--precision fp32|bf16|fp16]\n"
    "                     [--lora-rank R] [--attention own|cudnn]\n"
    "                     [--device cpu|cuda] [--json]\n"
    "\n"
    "Times full training steps (M micro-batches of forward + backward, then AdamW) of a\n"
    "GPT-2 shape, or of recipes/llama-114m.yaml's Llama, on synthetic tokens (after W\n"
    "untimed steps, default 2), and prints the median tokens/s, the split of a step, MFU,\n"
    "the optimizer's memory traffic against an in-place triad's bandwidth measured on the\n"
    "spot, the optimizer state and the peak memory. --device cpu (the default) computes on\n"
    "this process's OpenMP threads, and MFU is against an fp32 peak measured on the spot;\n"
    "--device cuda on the process's GPU (times taken after the GPU has finished; no MFU,\n"
    "as no peak is known for the GPU). --precision sets the matmuls' precision\n"
    "(docs/precision.md); --lora-rank R > 0 trains LoRA adapters of rank R on every\n"
    "linear layer of the blocks of a frozen base instead of every weight (docs/lora.md).\n"
    "--attention cudnn times cuDNN's fused attention instead of our kernels (--device cuda,\n"
    "--precision bf16; the recipe key kernels.attention, docs/cuda.md).\n";

static int parse_int(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const int v = std::stoi(value, &used);
    if (used == value.size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  throw Error("tessera bench: " + flag + " expects a positive integer, got '" + value + "'");
}

int cmd_bench(const Args& args) {
  BenchOptions o;
  std::string model = "gpt2-124m";
  bool json = false;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      check(i + 1 < args.size(), "tessera bench: " + a + " needs a value");
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kBenchUsage, stdout);
      return 0;
    } else if (a == "--model") {
      model = value();
    } else if (a == "--batch") {
      o.batch = parse_int(a, value());
    } else if (a == "--seq") {
      o.seq_len = parse_int(a, value());
    } else if (a == "--steps") {
      o.steps = parse_int(a, value());
    } else if (a == "--warmup") {
      o.warmup_steps = parse_int(a, value());
    } else if (a == "--accum") {
      o.micro_batches = parse_int(a, value());
    } else if (a == "--precision") {
      const std::string p = value();
      check(p == "fp32" || p == "bf16" || p == "fp16",
            "tessera bench: --precision expects fp32, bf16 or fp16, got '" + p + "'");
      o.options.precision = kernels::dtype_from_name(p);
    } else if (a == "--attention") {
      const std::string e = value();
      check(e == "own" || e == "cudnn",
            "tessera bench: --attention expects own or cudnn, got '" + e + "'");
      o.options.attention = e == "cudnn" ? AttentionEngine::cudnn : AttentionEngine::own;
    } else if (a == "--lora-rank") {
      o.options.lora.rank = parse_int(a, value());
    } else if (a == "--device") {
      o.device = parse_device("bench", value());
    } else if (a == "--json") {
      json = true;
    } else {
      throw Error("tessera bench: unknown option '" + a + "' (see tessera bench --help)");
    }
  }
  o.model = bench_model(model);
  for (LoraTarget t : block_linears(o.model.family)) o.options.lora.targets[(int)t] = true;
  device_backend("bench", o.device);
  const BenchResult r = bench_training_step(o);
  const char* device = kernels::to_string(r.device);
  if (json) {
    // On cuda no peak is known: peak_gflops and mfu are null.
    const nlohmann::json peak = r.has_mfu() ? nlohmann::json(r.peak_flops / 1e9) : nlohmann::json();
    const nlohmann::json mfu = r.has_mfu() ? nlohmann::json(r.mfu) : nlohmann::json();
    nlohmann::json j = {{"engine", "tessera"}, {"device", device}, {"model", model},
                        {"batch", o.batch}, {"seq_len", o.seq_len}, {"threads", r.threads},
                        {"tokens_per_s", r.tokens_per_s}, {"step_ms", r.step_ms},
                        {"forward_ms", r.forward_ms}, {"backward_ms", r.backward_ms},
                        {"optimizer_ms", r.optimizer_ms}, {"flops_per_token", r.flops_per_token},
                        {"achieved_gflops", r.achieved_flops / 1e9},
                        {"peak_gflops", peak}, {"mfu", mfu},
                        {"precision", kernels::dtype_name(o.options.precision)},
                        {"attention", r.attention},
                        {"micro_batches", o.micro_batches},
                        {"lora_rank", o.options.lora.rank},
                        {"trainable_parameters", r.trainable_parameters},
                        {"optimizer_state_mb", r.optimizer_state_mb},
                        {"peak_rss_mb", r.peak_rss_mb},
                        {"optimizer_bytes", r.optimizer_bytes},
                        {"triad_gb_per_s", r.triad_bandwidth / 1e9},
                        {"optimizer_bound_ms", r.optimizer_bound_ms()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    const std::string lora =
        o.options.lora.rank > 0 ? ", LoRA rank " + std::to_string(o.options.lora.rank) : "";
    const std::string where = r.device == kernels::Device::cpu
                                  ? "cpu, " + std::to_string(r.threads) + " thread(s)"
                                  : std::string(device);
    std::printf("tessera bench: %s on %s, %d x B=%d T=%d, %s, %s attention%s\n", model.c_str(),
                where.c_str(), o.micro_batches, o.batch, o.seq_len,
                kernels::dtype_name(o.options.precision), r.attention.c_str(), lora.c_str());
    std::printf("  %.1f tokens/s on %s | step %.1f ms = forward %.1f + backward %.1f + "
                "optimizer %.1f\n",
                r.tokens_per_s, device, r.step_ms, r.forward_ms, r.backward_ms, r.optimizer_ms);
    if (r.has_mfu())
      std::printf("  %.1f GFLOP/s of a measured %.1f GFLOP/s %s peak: MFU %.1f%%\n",
                  r.achieved_flops / 1e9, r.peak_flops / 1e9, device, 100 * r.mfu);
    else
      std::printf("  %.1f GFLOP/s on %s (MFU not reported: no peak known for the device)\n",
                  r.achieved_flops / 1e9, device);
    if (r.triad_bandwidth > 0)
      std::printf("  optimizer: %.0f MB moved in %.1f ms = %.1f GB/s, %.0f%% of the measured "
                  "in-place triad %.1f GB/s (bound %.1f ms)\n",
                  r.optimizer_bytes / 1e6, r.optimizer_ms, r.optimizer_bytes / r.optimizer_ms / 1e6,
                  100 * r.optimizer_bound_ms() / r.optimizer_ms, r.triad_bandwidth / 1e9,
                  r.optimizer_bound_ms());
    std::printf("  %lld trainable parameters, optimizer state %.1f MiB (%s), peak host memory "
                "%.0f MiB\n",
                (long long)r.trainable_parameters, r.optimizer_state_mb, device, r.peak_rss_mb);
  }
  return 0;
}

}  // namespace tessera::cli
