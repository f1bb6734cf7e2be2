// tessera bench [--model tiny|small|gpt2-124m] [--batch B] [--seq T] [--steps N] [--json]
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "framework/cli/commands/commands.h"
#include "framework/train/bench.h"
#include "framework/util/error.h"

namespace tessera::cli {

static const char* kBenchUsage =
    "usage: tessera bench [--model tiny|small|gpt2-124m] [--batch B] [--seq T] [--steps N] "
    "[--json]\n"
    "\n"
    "Times full training steps (forward + backward + AdamW, fp32) of a GPT-2 shape on\n"
    "synthetic tokens with this process's OpenMP threads, and prints the median tokens/s,\n"
    "the split of a step, and MFU against an fp32 peak measured on the spot.\n";

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
    } else if (a == "--json") {
      json = true;
    } else {
      throw Error("tessera bench: unknown option '" + a + "' (see tessera bench --help)");
    }
  }
  o.model = bench_model(model);
  const BenchResult r = bench_training_step(o);
  if (json) {
    nlohmann::json j = {{"engine", "tessera"}, {"model", model}, {"batch", o.batch},
                        {"seq_len", o.seq_len}, {"threads", r.threads},
                        {"tokens_per_s", r.tokens_per_s}, {"step_ms", r.step_ms},
                        {"forward_ms", r.forward_ms}, {"backward_ms", r.backward_ms},
                        {"optimizer_ms", r.optimizer_ms}, {"flops_per_token", r.flops_per_token},
                        {"achieved_gflops", r.achieved_flops / 1e9},
                        {"peak_gflops", r.peak_flops / 1e9}, {"mfu", r.mfu}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("tessera bench: %s, B=%d T=%d, %d thread(s), fp32\n", model.c_str(), o.batch,
                o.seq_len, r.threads);
    std::printf("  %.1f tokens/s | step %.1f ms = forward %.1f + backward %.1f + optimizer %.1f\n",
                r.tokens_per_s, r.step_ms, r.forward_ms, r.backward_ms, r.optimizer_ms);
    std::printf("  %.1f GFLOP/s of a measured %.1f GFLOP/s peak: MFU %.1f%%\n",
                r.achieved_flops / 1e9, r.peak_flops / 1e9, 100 * r.mfu);
  }
  return 0;
}

}  // namespace tessera::cli
