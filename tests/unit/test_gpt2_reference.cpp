// Tessera's GPT-2 and llama families against an independent PyTorch implementation
// (tests/reference/gpt2_reference.py) from the same weights and batches: logits, loss and
// every parameter gradient at the initial weights, and the losses of 10 AdamW steps with
// the warm-up/cosine schedule and gradient clipping. Tolerance: relative 1e-4 in fp32.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "base/rng.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

template <typename T>
void write_binary(const fs::path& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), (std::streamsize)(v.size() * sizeof(T)));
}

std::vector<float> read_floats(const fs::path& path, size_t n) {
  std::vector<float> v(n);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), (std::streamsize)(n * sizeof(float)));
  EXPECT_EQ((size_t)f.gcount(), n * sizeof(float)) << path;
  return v;
}

// max |a - b| / max |b| over a tensor: the error relative to the tensor's scale.
double relative_error(const float* a, const float* b, int64_t n) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < n; i++) {
    err = std::max(err, std::abs((double)a[i] - (double)b[i]));
    scale = std::max(scale, std::abs((double)b[i]));
  }
  return scale > 0 ? err / scale : err;
}

struct Fixture {
  GPTConfig cfg;
  OptimConfig optim;
  int B = 3, T = 12, steps = 10;
  std::vector<int32_t> inputs, targets;  // [steps, B, T]
};

Fixture make_fixture(GPTConfig cfg = {}, int B = 3, int T = 12) {
  Fixture f;
  f.cfg = cfg;
  f.B = B, f.T = T;
  f.cfg.n_layer = 2;
  f.cfg.n_head = 4;
  f.cfg.n_embd = 32;
  f.cfg.vocab_size = 61;  // padded to 64: the padded columns must be masked out
  f.cfg.padded_vocab_size = 64;
  f.cfg.seq_len = std::max(16, T);  // T = 12 < seq_len: only the first rows of wpe are used
  f.optim.lr = 1e-2;
  f.optim.min_lr = 1e-3;
  f.optim.warmup_steps = 3;
  f.optim.weight_decay = 0.1;
  f.optim.grad_clip = 1.0;
  // Each sequence starts at a random token and follows next = (3 * token + 1) mod V, a
  // rule the model can learn within ten steps.
  const CounterRng rng(99, "reference batches");
  for (int s = 0; s < f.steps * f.B; s++) {
    int32_t tok = (int32_t)(rng.uniform((uint64_t)s) * f.cfg.vocab_size) % f.cfg.vocab_size;
    for (int t = 0; t <= f.T; t++) {
      if (t < f.T) f.inputs.push_back(tok);
      if (t > 0) f.targets.push_back(tok);
      tok = (3 * tok + 1) % f.cfg.vocab_size;
    }
  }
  return f;
}

// Initial weights: the model's own init plus noise, so that biases and LayerNorm
// weights are not 0 and 1 (which would hide errors in their gradients).
void init_test_weights(GPTModel& model) {
  model.init_weights(1234);
  const CounterRng noise(5, "reference noise");
  for (const auto& p : model.table().params())
    for (int64_t i = 0; i < p.numel; i++)
      model.params()[p.offset + i] += 0.05f * noise.normal((uint64_t)(p.offset + i));
}

void expect_matches_pytorch(const Fixture& f, const std::string& name) {
  // No skip: python3-torch is a test dependency that `make test` installs.
  ASSERT_TRUE(fs::exists("/usr/bin/python3")) << "/usr/bin/python3 not found: run make test, "
                                                 "which installs python3-torch";
  GPTModel model(f.cfg, f.B);
  init_test_weights(model);

  const fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::create_directories(dir);
  nlohmann::json layout = nlohmann::json::array(), decay = nlohmann::json::array();
  for (const auto& p : model.table().params()) {
    layout.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    if (p.weight_decay) decay.push_back(p.name);
  }
  nlohmann::json config = {
      {"family", f.cfg.llama() ? "llama" : "gpt2"}, {"n_kv_head", f.cfg.kv_heads()},
      {"rope_theta", f.cfg.rope_theta}, {"norm_eps", f.cfg.norm_eps}, {"tied", f.cfg.tied()},
      {"n_layer", f.cfg.n_layer}, {"n_head", f.cfg.n_head}, {"n_embd", f.cfg.n_embd},
      {"vocab_size", f.cfg.vocab_size}, {"B", f.B}, {"T", f.T}, {"steps", f.steps},
      {"decay", decay},
      {"optim", {{"lr", f.optim.lr}, {"min_lr", f.optim.min_lr},
                 {"warmup_steps", f.optim.warmup_steps}, {"weight_decay", f.optim.weight_decay},
                 {"beta1", f.optim.beta1}, {"beta2", f.optim.beta2}, {"eps", f.optim.eps},
                 {"grad_clip", f.optim.grad_clip}}}};
  std::ofstream(dir / "config.json") << config.dump();
  std::ofstream(dir / "params.json") << layout.dump();
  write_binary(dir / "params.bin",
               std::vector<float>(model.params(), model.params() + model.flat_size()));
  write_binary(dir / "inputs.bin", f.inputs);
  write_binary(dir / "targets.bin", f.targets);

  const std::string cmd = std::string("/usr/bin/python3 ") + TESSERA_SOURCE_DIR +
                          "/tests/reference/gpt2_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the PyTorch reference failed: " << cmd;
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "ref.json"));

  // Logits and loss at the initial weights.
  const int Vp = f.cfg.padded_vocab_size;
  model.forward(f.inputs.data(), nullptr, f.B, f.T);
  const auto ref_logits = read_floats(dir / "ref_logits.bin", (size_t)f.B * f.T * Vp);
  EXPECT_LE(relative_error(model.logits(), ref_logits.data(), (int64_t)ref_logits.size()), 1e-4);
  const float loss = model.forward(f.inputs.data(), f.targets.data(), f.B, f.T);
  EXPECT_NEAR(loss, ref["loss"].get<double>(), 1e-4 * ref["loss"].get<double>());

  // Every parameter gradient.
  model.zero_grad();
  const float loss2 = model.forward_backward(f.inputs.data(), f.targets.data(), f.B, f.T, 1.0f);
  EXPECT_FLOAT_EQ(loss2, loss);
  const auto ref_grads = read_floats(dir / "ref_grads.bin", (size_t)model.flat_size());
  for (const auto& p : model.table().params()) {
    const double err =
        relative_error(model.grads() + p.offset, ref_grads.data() + p.offset, p.numel);
    EXPECT_LE(err, 1e-4) << "gradient of " << p.name;
  }

  // Ten AdamW steps with warm-up, cosine decay and clipping.
  GPTModel trained(f.cfg, f.B);
  init_test_weights(trained);
  AdamW adamw(trained.table(), f.optim);
  const int64_t per_step = (int64_t)f.B * f.T;
  for (int s = 0; s < f.steps; s++) {
    trained.zero_grad();
    const float l = trained.forward_backward(f.inputs.data() + s * per_step,
                                             f.targets.data() + s * per_step, f.B, f.T, 1.0f);
    const double norm = grad_norm(trained.grads(), trained.flat_size());
    adamw.step(trained.params(), trained.grads(), learning_rate(f.optim, s, f.steps), s + 1,
               clip_factor(norm, f.optim.grad_clip));
    const double r = ref["losses"][s].get<double>();
    EXPECT_NEAR(l, r, 1e-4 * r) << "loss before update " << s;
  }
  // The run must actually train: the last loss is below the first.
  EXPECT_LT(ref["losses"][f.steps - 1].get<double>(), ref["losses"][0].get<double>());
}

}  // namespace

TEST(GPT2Reference, MatchesPyTorch) { expect_matches_pytorch(make_fixture(), "gpt2_reference"); }

// Grouped-query attention (2 query heads per key/value head), an MLP width that is not
// 4C, an LM head of its own.
TEST(LlamaReference, GroupedQueryAttentionUntiedHeadMatchesPyTorch) {
  GPTConfig cfg;
  cfg.family = Family::llama;
  cfg.n_kv_head = 2;
  cfg.intermediate_size = 48;
  expect_matches_pytorch(make_fixture(cfg), "llama_reference_gqa");
}

// One key/value head for all queries, tied embeddings, and positions up to 299 with a
// small rotary base (theta 500: the slowest pair turns 0.3 rad per position), so the
// rotary angles are far from 0.
TEST(LlamaReference, OneKeyValueHeadTiedLongPositionsMatchesPyTorch) {
  GPTConfig cfg;
  cfg.family = Family::llama;
  cfg.n_kv_head = 1;
  cfg.intermediate_size = 40;
  cfg.tie_embeddings = true;
  cfg.rope_theta = 500;
  expect_matches_pytorch(make_fixture(cfg, 1, 300), "llama_reference_mqa");
}

namespace {
void expect_grad_ready_in_reverse_order(GPTConfig cfg) {
  cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 16, cfg.vocab_size = 32;
  cfg.padded_vocab_size = 32, cfg.seq_len = 8;
  GPTModel model(cfg, 1);
  model.init_weights(3);
  std::vector<int> order;
  bool changed_after_ready = false;
  model.set_grad_ready_hook([&](int i) { order.push_back(i); });
  std::vector<int32_t> x = {1, 2, 3, 4, 5, 6, 7, 8}, y = {2, 3, 4, 5, 6, 7, 8, 9};
  model.zero_grad();
  model.forward_backward(x.data(), y.data(), 1, 8, 1.0f);
  const int n = (int)model.table().params().size();
  ASSERT_EQ((int)order.size(), n);
  for (int k = 0; k < n; k++) EXPECT_EQ(order[k], n - 1 - k) << "call " << k;

  // "Final" means final: record each gradient when announced, compare at the end.
  std::vector<std::vector<float>> at_ready(n);
  model.set_grad_ready_hook([&](int i) {
    const auto& p = model.table().params()[i];
    at_ready[i].assign(model.grads() + p.offset, model.grads() + p.offset + p.numel);
  });
  model.zero_grad();
  model.forward_backward(x.data(), y.data(), 1, 8, 1.0f);
  for (int i = 0; i < n; i++) {
    const auto& p = model.table().params()[i];
    for (int64_t e = 0; e < p.numel; e++)
      changed_after_ready |= at_ready[i][e] != model.grads()[p.offset + e];
  }
  EXPECT_FALSE(changed_after_ready);
}
}  // namespace

TEST(GPTModel, GradReadyHookFiresOnceForEveryParameterInReverseOrder) {
  expect_grad_ready_in_reverse_order(GPTConfig{});
}

TEST(Llama, GradReadyHookFiresOnceForEveryParameterInReverseOrder) {
  GPTConfig cfg;
  cfg.family = Family::llama;
  cfg.intermediate_size = 24;
  expect_grad_ready_in_reverse_order(cfg);  // untied: norm and lm_head last
  cfg.tie_embeddings = true;
  expect_grad_ready_in_reverse_order(cfg);
}
