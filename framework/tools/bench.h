// Timing of full training steps (forward + backward + AdamW) on synthetic tokens, for
// `tessera bench` and `make bench`.
#pragma once
#include <string>
#include <vector>

#include "framework/model/gpt2.h"

namespace tessera {

struct BenchOptions {
  GPTConfig model;
  ModelOptions options;          // precision, LoRA (then only the adapters train)
  int batch = 4, seq_len = 64;
  int micro_batches = 1;         // per step, gradients accumulated (AdamW once per step)
  int warmup_steps = 2, steps = 10;
};

struct BenchResult {
  double tokens_per_s = 0;   // median over the timed steps
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0, step_ms = 0;  // medians
  double flops_per_token = 0;
  double achieved_flops = 0;  // at the median step
  double peak_flops = 0;      // measured on the spot (FMA loop)
  double mfu = 0;
  int threads = 1;
  int64_t trainable_parameters = 0;
  double optimizer_state_mb = 0;  // AdamW's two fp32 moments
  double peak_rss_mb = 0;         // of this process, after the timed steps
};

BenchResult bench_training_step(const BenchOptions& options);

// Named shapes: "tiny" (recipes/tiny.yaml's model), "small" (6 layers, 384 wide, GPT-2
// vocabulary) and "gpt2-124m". Throws tessera::Error for other names.
GPTConfig bench_model(const std::string& name);

}  // namespace tessera
