// Timing of full training steps (forward + backward + AdamW) on synthetic tokens, for
// `tessera bench` and `make bench`.
#pragma once
#include <string>
#include <vector>

#include "framework/model/gpt_model.h"

namespace tessera {

struct BenchOptions {
  GPTConfig model;
  ModelOptions options;          // precision, LoRA (then only the adapters train)
  // Where the steps compute (kernels::backend_for; sets options.backend): the CPU's
  // OpenMP threads, or the process's GPU.
  kernels::Device device = kernels::Device::cpu;
  int batch = 4, seq_len = 64;
  int micro_batches = 1;         // per step, gradients accumulated (AdamW once per step)
  int warmup_steps = 2, steps = 10;
};

// Times on a GPU are taken after backend().synchronize(): each covers the work it
// queued, not only its launches.
struct BenchResult {
  kernels::Device device = kernels::Device::cpu;  // where the steps computed
  double tokens_per_s = 0;   // median over the timed steps
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0, step_ms = 0;  // medians
  double flops_per_token = 0;
  double achieved_flops = 0;  // at the median step
  // The CPU's fp32 peak measured on the spot (FMA loop), and achieved / peak. On cuda 0
  // (no peak is known for the GPU, and the CPU's would mean nothing): see has_mfu().
  double peak_flops = 0;
  double mfu = 0;
  bool has_mfu() const { return peak_flops > 0; }
  int threads = 1;            // the host's OpenMP threads (they compute on cpu only)
  int64_t trainable_parameters = 0;
  std::string attention;      // the model's attention engine (GPTModel::attention_kind)
  double optimizer_state_mb = 0;  // AdamW's two fp32 moments
  double peak_rss_mb = 0;         // of this process (host memory), after the timed steps
  // The optimizer phase only streams memory: the bytes it must move (the gradient norm
  // reads the gradients; AdamW reads parameters, gradients and both moments and writes
  // parameters, moments and the 16-bit copy), and on the CPU the in-place triad bandwidth
  // measured in the same run (0 on cuda), whose ratio is the phase's lower bound.
  double optimizer_bytes = 0;
  double triad_bandwidth = 0;  // bytes/s
  double optimizer_bound_ms() const { return triad_bandwidth > 0 ? 1e3 * optimizer_bytes / triad_bandwidth : 0; }
};

BenchResult bench_training_step(const BenchOptions& options);

// Named shapes: "tiny" (recipes/tiny.yaml's model), "small" (6 layers, 384 wide, GPT-2
// vocabulary) and "gpt2-124m". Throws tessera::Error for other names.
GPTConfig bench_model(const std::string& name);

}  // namespace tessera
