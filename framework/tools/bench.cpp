#include "framework/tools/bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "framework/optim/adamw.h"
#include "framework/util/memory.h"
#include "framework/util/peak.h"

namespace tessera {

namespace {
double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
}  // namespace

GPTConfig bench_model(const std::string& name) {
  GPTConfig c;
  if (name == "tiny") {
    c.n_layer = 4, c.n_head = 4, c.n_embd = 128, c.vocab_size = 256, c.padded_vocab_size = 256;
    c.seq_len = 128;
  } else if (name == "small") {
    c.n_layer = 6, c.n_head = 6, c.n_embd = 384, c.vocab_size = 50257;
    c.padded_vocab_size = 50304, c.seq_len = 256;
  } else if (name == "gpt2-124m") {
    c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.vocab_size = 50257;
    c.padded_vocab_size = 50304, c.seq_len = 1024;
  } else if (name == "llama-114m") {  // recipes/llama-114m.yaml
    c.family = Family::llama;
    c.n_layer = 12, c.n_head = 12, c.n_kv_head = 4, c.n_embd = 768, c.intermediate_size = 2048;
    c.tie_embeddings = true, c.vocab_size = 50257, c.padded_vocab_size = 50304, c.seq_len = 1024;
  } else {
    throw Error("unknown benchmark model '" + name +
                "' (expected tiny, small, gpt2-124m or llama-114m)");
  }
  return c;
}

BenchResult bench_training_step(const BenchOptions& o) {
  check(o.seq_len <= o.model.seq_len, "bench: --seq " + std::to_string(o.seq_len) +
                                          " exceeds the model's seq_len " +
                                          std::to_string(o.model.seq_len));
  // The model's context is the benchmark's T: the activation arena (attention matrices
  // [L, B, NH, T, T], logits) is then the size a run at that T allocates, so peak memory
  // means what it says; only wpe shrinks (T rows instead of seq_len).
  GPTConfig shape = o.model;
  shape.seq_len = o.seq_len;
  ModelOptions options = o.options;
  options.backend = &kernels::backend_for(o.device);
  kernels::Backend& backend = *options.backend;
  GPTModel model(shape, o.batch, TensorParallel{}, 1, PipelineStage{}, 1, options);
  model.init_weights(1);
  OptimConfig optim;
  AdamW adamw(model.table(), optim, model.backend());
  const CounterRng rng(2, "bench tokens");
  std::vector<int32_t> x((size_t)o.batch * o.seq_len), y(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    x[i] = (int32_t)(rng.uniform(2 * i) * o.model.vocab_size) % o.model.vocab_size;
    y[i] = (int32_t)(rng.uniform(2 * i + 1) * o.model.vocab_size) % o.model.vocab_size;
  }
  using clock = std::chrono::steady_clock;
  auto ms_between = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  std::vector<double> fwd, bwd, opt, total;
  backend.synchronize();  // the initialisation's uploads are not the first step's
  for (int s = 0; s < o.warmup_steps + o.steps; s++) {
    const auto t0 = clock::now();
    model.zero_grad();
    double forward_ms = 0, backward_ms = 0;
    for (int m = 0; m < o.micro_batches; m++) {
      const auto m0 = clock::now();
      model.forward_backward(x.data(), y.data(), o.batch, o.seq_len, 1.0f / o.micro_batches);
      // The forward pass ends in reading the losses on the host (so it is complete on any
      // device); the backward pass is complete after synchronize() (a no-op on the CPU),
      // so its time is the rest of the micro-batch.
      backend.synchronize();
      const double pass_ms = ms_between(m0, clock::now());
      forward_ms += model.last_times().forward_ms;
      backward_ms += pass_ms - model.last_times().forward_ms;
    }
    const auto t1 = clock::now();
    const double norm = grad_norm(model.grads(), model.flat_size(), model.backend());
    float* params = model.params();  // as the trainer: the 16-bit copy made by AdamW
    adamw.step(params, model.grads(), 1e-4, s + 1, clip_factor(norm, 1.0),
               model.weights16_for_full_update(), model.options().precision);
    backend.synchronize();
    const auto t2 = clock::now();
    if (s < o.warmup_steps) continue;
    fwd.push_back(forward_ms);
    bwd.push_back(backward_ms);
    opt.push_back(ms_between(t1, t2));
    total.push_back(ms_between(t0, t2));
  }
  BenchResult r;
  r.device = o.device;
  r.threads = omp_get_max_threads();
  r.attention = model.attention_kind();
  r.step_ms = median(total);
  r.forward_ms = median(fwd);
  r.backward_ms = median(bwd);
  r.optimizer_ms = median(opt);
  r.tokens_per_s = (double)o.micro_batches * o.batch * o.seq_len / (r.step_ms / 1e3);
  for (const ParamInfo& p : model.table().params()) r.trainable_parameters += p.logical_numel();
  r.optimizer_state_mb = 2.0 * sizeof(float) * (double)model.flat_size() / (1 << 20);
  r.peak_rss_mb = peak_rss_mib();
  r.flops_per_token = o.model.training_flops_per_token(o.seq_len);
  r.achieved_flops = r.tokens_per_s * r.flops_per_token;
  // Per element: the norm reads the gradient (4 bytes); AdamW reads p, g, m, v (16) and
  // writes p, m, v (12) and the 16-bit copy (2) when there is one.
  const bool copy16 = model.weights16_for_full_update() != nullptr;
  r.optimizer_bytes = 4.0 * (double)model.flat_size() +
                      (28.0 + (copy16 ? 2.0 : 0.0)) * (double)adamw.range().size();
  if (o.device == kernels::Device::cpu) {
    r.peak_flops = measure_fp32_peak_flops(0.5);
    r.mfu = r.achieved_flops / r.peak_flops;
    r.triad_bandwidth = measure_triad_bandwidth();
  }
  return r;
}

}  // namespace tessera
