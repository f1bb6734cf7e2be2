// kernels.attention in the model: which engine GPTModel runs (auto and own: our kernels;
// cudnn: cuDNN's where the backend builds it, else our flash kernel, said in one line),
// per micro-batch shape, in the forward and the backward pass alike; and the settings it
// refuses. The CPU has neither flash nor cuDNN attention, so the model computes here on
// EmulatedEngines, a CPU backend whose two engines are our full attention in disguise.
// Last, whole runs of `tessera_emulated_gpu` (the CUDA backend on the CUDA emulator,
// which has no cuDNN): kernels.attention cudnn says so in one line and trains exactly as
// kernels.attention own.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "framework/model/gpt_model.h"
#include "kernels/backend.h"
#include "tests/e2e/tessera_process.h"

namespace tessera {
namespace {

using kernels::DropoutMask;
using kernels::Dtype;
using test_support::error_of;

// The CPU backend with flash and cuDNN attention, both computed by the CPU's full
// attention, which keeps the T x T probabilities for the backward pass in a buffer of its
// own, found again by the lse pointer the model passes (one per layer). So a model on it
// computes exactly what our full attention computes, whichever engine it calls, and the
// counts say which one it called. cudnn_attention_prepare returns cudnn_refuses(B, T).
class EmulatedEngines final : public kernels::Backend {
 public:
  struct Calls {
    int forward = 0, backward = 0;
  };
  Calls full, flash, cudnn;
  int prepares = 0;
  std::function<std::string(int B, int T)> cudnn_refuses = [](int, int) { return ""; };

  kernels::Device device() const override { return kernels::Device::cpu; }

  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                         int NH) override {
    full.forward++;
    cpu_.attention_forward(out, att, qkv, B, T, C, NH);
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                          int T, int C, int NH) override {
    full.backward++;
    cpu_.attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
  }
  bool flash_attention_supported(int, int) const override { return true; }
  void flash_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                               int NH) override {
    emulate_forward(flash, out, lse, qkv, B, T, C, NH);
  }
  void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float*,
                                const float* lse, int B, int T, int C, int NH) override {
    emulate_backward(flash, dqkv, dout, qkv, lse, B, T, C, NH);
  }
  std::string cudnn_attention_prepare(int B, int T, int, int) override {
    prepares++;
    return cudnn_refuses(B, T);
  }
  void cudnn_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                               int NH) override {
    emulate_forward(cudnn, out, lse, qkv, B, T, C, NH);
  }
  void cudnn_attention_backward(float* dqkv, const float* dout, const float* qkv, const float*,
                                const float* lse, int B, int T, int C, int NH) override {
    emulate_backward(cudnn, dqkv, dout, qkv, lse, B, T, C, NH);
  }

  // Everything else is the CPU backend's.
  void synchronize() override { cpu_.synchronize(); }
  void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                       int T, int C) override {
    cpu_.encoder_forward(out, inp, wte, wpe, B, T, C);
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                        int T, int C) override {
    cpu_.encoder_backward(dwte, dwpe, dout, inp, B, T, C);
  }
  void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                   const float* wpe, int B, int T, int C, int vocab_start,
                                   int vocab_rows) override {
    cpu_.encoder_forward_vocab_shard(out, inp, wte_shard, wpe, B, T, C, vocab_start, vocab_rows);
  }
  void encoder_backward_vocab_shard(float* dwte_shard, float* dwpe, const float* dout,
                                    const int32_t* inp, int B, int T, int C, int vocab_start,
                                    int vocab_rows) override {
    cpu_.encoder_backward_vocab_shard(dwte_shard, dwpe, dout, inp, B, T, C, vocab_start,
                                      vocab_rows);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C) override {
    cpu_.layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override {
    cpu_.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int C, int OC) override {
    cpu_.matmul_forward(out, inp, weight, bias, N, C, OC);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC) override {
    cpu_.matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  }
  void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16, const uint16_t* weight16,
                            const float* bias, int N, int C, int OC) override {
    cpu_.matmul_forward_16bit(dt, out, inp16, weight16, bias, N, C, OC);
  }
  void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias, const float* dout,
                             const uint16_t* dout16, const uint16_t* inp16,
                             const uint16_t* weight16, int N, int C, int OC) override {
    cpu_.matmul_backward_16bit(dt, dinp, dweight, dbias, dout, dout16, inp16, weight16, N, C, OC);
  }
  void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
             const float* B, int ldb, float beta, float* C, int ldc) override {
    cpu_.sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gelu_forward(float* out, const float* inp, int64_t N) override {
    cpu_.gelu_forward(out, inp, N);
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) override {
    cpu_.gelu_backward(dinp, inp, dout, N);
  }
  void residual_forward(float* out, const float* a, const float* b, int64_t N) override {
    cpu_.residual_forward(out, a, b, N);
  }
  void add_bias(float* out, const float* bias, int N, int OC) override {
    cpu_.add_bias(out, bias, N, OC);
  }
  void dropout_forward(float* out, const float* inp, int N, int C,
                       const DropoutMask& mask) override {
    cpu_.dropout_forward(out, inp, N, C, mask);
  }
  void dropout_backward(float* dinp, const float* dout, int N, int C,
                        const DropoutMask& mask) override {
    cpu_.dropout_backward(dinp, dout, N, C, mask);
  }
  void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                     const int32_t* targets, float dloss, int N, int V,
                                     int Vp) override {
    cpu_.crossentropy_forward_backward(losses, dlogits, logits, targets, dloss, N, V, Vp);
  }
  void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets, int N,
                                int Vl, int n_real, int vocab_start) override {
    cpu_.crossentropy_shard_stats(stats, logits, targets, N, Vl, n_real, vocab_start);
  }
  void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                                 const float* all_stats, int ranks, const int32_t* targets,
                                 float dloss, int N, int Vl, int n_real, int vocab_start) override {
    cpu_.crossentropy_shard_finish(losses, dlogits, logits, all_stats, ranks, targets, dloss, N, Vl,
                                   n_real, vocab_start);
  }
  void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t,
                    float grad_scale) override {
    cpu_.adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale);
  }
  void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                              float lr, float beta1, float beta2, float eps, float weight_decay,
                              int64_t t, float grad_scale, uint16_t* copy16, Dtype dt) override {
    cpu_.adamw_update_with_copy(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t,
                                grad_scale, copy16, dt);
  }
  double sum_squares(const float* x, int64_t n) override { return cpu_.sum_squares(x, n); }
  bool has_nonfinite(const float* x, int64_t n) override { return cpu_.has_nonfinite(x, n); }
  void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n) override {
    cpu_.round_to_16bit(dt, dst, src, n);
  }
  void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                           int64_t src_stride) override {
    cpu_.round_to_16bit_rows(dt, dst, src, rows, cols, src_stride);
  }
  void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n) override {
    cpu_.widen_16bit(dt, dst, src, n);
  }
  void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                                uint64_t offset) override {
    cpu_.round_to_bf16_stochastic(dst, src, n, seed, offset);
  }

 protected:
  void zero_bytes(void* dst, std::size_t bytes) override {
    cpu_.zero(static_cast<char*>(dst), (int64_t)bytes);
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    cpu_.copy(static_cast<char*>(dst), static_cast<const char*>(src), (int64_t)bytes);
  }
  void to_device_bytes(void* dst, const void* src, std::size_t bytes) override {
    copy_bytes(dst, src, bytes);
  }
  void to_host_bytes(void* dst, const void* src, std::size_t bytes) override {
    copy_bytes(dst, src, bytes);
  }

 private:
  void emulate_forward(Calls& calls, float* out, float* lse, const float* qkv, int B, int T, int C,
                       int NH) {
    calls.forward++;
    std::vector<float>& att = probabilities_[lse];
    att.resize((size_t)B * NH * T * T);
    cpu_.attention_forward(out, att.data(), qkv, B, T, C, NH);
  }
  void emulate_backward(Calls& calls, float* dqkv, const float* dout, const float* qkv,
                        const float* lse, int B, int T, int C, int NH) {
    calls.backward++;
    cpu_.attention_backward(dqkv, dout, qkv, probabilities_.at(lse).data(), B, T, C, NH);
  }

  kernels::Backend& cpu_ = kernels::cpu_backend();
  std::map<const float*, std::vector<float>> probabilities_;
};

GPTConfig small() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.vocab_size = 64, c.padded_vocab_size = 64;
  c.seq_len = 16;
  return c;
}
constexpr int kMaxBatch = 2;

ModelOptions options(AttentionEngine engine, kernels::Backend* backend,
                     Dtype precision = Dtype::bf16) {
  ModelOptions o;
  o.attention = engine;
  o.backend = backend;
  o.precision = precision;
  return o;
}

std::unique_ptr<GPTModel> model_with(const ModelOptions& o) {
  auto model =
      std::make_unique<GPTModel>(small(), kMaxBatch, TensorParallel{}, 1, PipelineStage{}, 1, o);
  model->init_weights(5);
  return model;
}

struct Pass {
  float loss = 0;
  std::vector<float> grads;
};

// Forward and backward on B sequences of T tokens, from zeroed gradients.
Pass train_pass(GPTModel& m, int B, int T = 16) {
  const int V = m.config().vocab_size;
  const CounterRng rng(3, "attention engine tokens");
  std::vector<int32_t> x(B * T), y(B * T);
  for (int i = 0; i < B * T; i++) {
    x[i] = (int32_t)(rng.uniform(2 * i) * V) % V;
    y[i] = (int32_t)(rng.uniform(2 * i + 1) * V) % V;
  }
  m.zero_grad();
  Pass p;
  p.loss = m.forward_backward(x.data(), y.data(), B, T, 1.0f);
  p.grads.assign(m.grads(), m.grads() + m.flat_size());
  return p;
}

// The same numbers as our full attention on the plain CPU backend, bit for bit.
void expect_full_attention_numbers(GPTModel& m, int B, int T = 16) {
  auto reference = model_with(options(AttentionEngine::own, nullptr));
  ASSERT_STREQ(reference->attention_kind(), "full");
  const Pass want = train_pass(*reference, B, T), got = train_pass(m, B, T);
  EXPECT_EQ(got.loss, want.loss);
  EXPECT_EQ(got.grads, want.grads);
}

TEST(AttentionEngine, AutoAndOwnAreOurKernels) {
  EmulatedEngines gpu;
  for (AttentionEngine e : {AttentionEngine::auto_, AttentionEngine::own}) {
    EXPECT_STREQ(model_with(options(e, &gpu))->attention_kind(), "flash") << to_string(e);
    EXPECT_STREQ(model_with(options(e, &gpu, Dtype::fp32))->attention_kind(), "full");
    EXPECT_STREQ(model_with(options(e, nullptr))->attention_kind(), "full");  // the CPU's
  }
  EXPECT_EQ(gpu.prepares, 0);
}

TEST(AttentionEngine, CudnnWhereTheBackendBuildsIt) {
  EmulatedEngines gpu;
  testing::internal::CaptureStderr();
  auto model = model_with(options(AttentionEngine::cudnn, &gpu));
  EXPECT_STREQ(model->attention_kind(), "cudnn");
  expect_full_attention_numbers(*model, kMaxBatch);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(gpu.cudnn.forward, 2);  // a layer each
  EXPECT_EQ(gpu.cudnn.backward, 2);
  EXPECT_EQ(gpu.flash.forward + gpu.flash.backward + gpu.full.forward + gpu.full.backward, 0);
  EXPECT_EQ(gpu.prepares, 1);
}

TEST(AttentionEngine, FallsBackToOurFlashKernelSayingWhyOnce) {
  EmulatedEngines gpu;
  gpu.cudnn_refuses = [](int, int) { return "no engine for this shape"; };
  testing::internal::CaptureStderr();
  auto model = model_with(options(AttentionEngine::cudnn, &gpu));
  EXPECT_STREQ(model->attention_kind(), "flash");
  expect_full_attention_numbers(*model, kMaxBatch);
  expect_full_attention_numbers(*model, 1);  // a flash model asks cuDNN nothing more
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "kernels.attention cudnn: no engine for this shape; the attention runs on our "
            "flash kernel\n");
  EXPECT_EQ(gpu.flash.forward, 4);
  EXPECT_EQ(gpu.flash.backward, 4);
  EXPECT_EQ(gpu.cudnn.forward + gpu.cudnn.backward, 0);
  EXPECT_EQ(gpu.prepares, 1);

  // A process that is not the one to say it (the trainer's other ranks) stays quiet.
  ModelOptions quiet = options(AttentionEngine::cudnn, &gpu);
  quiet.print_notices = false;
  testing::internal::CaptureStderr();
  EXPECT_STREQ(model_with(quiet)->attention_kind(), "flash");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

// cuDNN builds the model's own shape but not micro-batches of one sequence: those run on
// our flash kernel, forward and backward, said once for B = 1 whatever the length.
TEST(AttentionEngine, EachMicroBatchShapeHasItsEngine) {
  EmulatedEngines gpu;
  gpu.cudnn_refuses = [](int B, int) { return B == 1 ? "B 1 is too small" : ""; };
  auto model = model_with(options(AttentionEngine::cudnn, &gpu));
  ASSERT_STREQ(model->attention_kind(), "cudnn");
  testing::internal::CaptureStderr();
  expect_full_attention_numbers(*model, 1);
  expect_full_attention_numbers(*model, 1);
  EXPECT_EQ(testing::internal::GetCapturedStderr(),
            "kernels.attention cudnn: B 1 is too small; micro-batches of B=1 run on our flash "
            "kernel\n");
  EXPECT_EQ(gpu.flash.forward, 4);
  EXPECT_EQ(gpu.flash.backward, 4);
  EXPECT_EQ(gpu.cudnn.forward + gpu.cudnn.backward, 0);

  // Shorter than seq_len (sampling): our flash kernel, without asking cuDNN.
  expect_full_attention_numbers(*model, kMaxBatch, 8);
  EXPECT_EQ(gpu.flash.forward, 6);
  EXPECT_EQ(gpu.cudnn.forward + gpu.cudnn.backward, 0);
  expect_full_attention_numbers(*model, kMaxBatch);
  EXPECT_EQ(gpu.cudnn.forward, 2);
  EXPECT_EQ(gpu.cudnn.backward, 2);
  // Once per shape of seq_len tokens: the model's own and (1, 16).
  EXPECT_EQ(gpu.prepares, 2);
}

TEST(AttentionEngine, CudnnIsRefusedWhereItCannotStandInForOurFlashKernel) {
  // The CPU backend has no flash attention to fall back to.
  const std::string no_flash =
      error_of([] { model_with(options(AttentionEngine::cudnn, nullptr)); });
  for (const char* part : {"kernels.attention cudnn: our flash attention kernel",
                           "does not run head size 16 (model.n_embd 32 / model.n_head 2) on the "
                           "cpu backend",
                           "set kernels.attention own"})
    EXPECT_NE(no_flash.find(part), std::string::npos) << no_flash;
  EmulatedEngines gpu;
  EXPECT_EQ(error_of([&] { model_with(options(AttentionEngine::cudnn, &gpu, Dtype::fp32)); }),
            "kernels.attention cudnn is for model.family gpt2 in train.precision bf16, not gpt2 "
            "in fp32");
  GPTConfig llama = small();
  llama.family = Family::llama;
  EXPECT_EQ(error_of([&] {
              GPTModel(llama, kMaxBatch, {}, 1, {}, 1, options(AttentionEngine::cudnn, nullptr));
            }),
            "kernels.attention cudnn is for model.family gpt2 in train.precision bf16, not llama "
            "in bf16");
}

// A few steps of a one-layer model with one head of 64 (a head size our flash kernel runs)
// in bf16 on the emulated GPU, with kernels.attention own and cudnn.
TEST(AttentionEngineRun, CudnnWithoutCudnnSaysSoAndTrainsAsOwn) {
  using namespace test_support;
  const ScratchDir work("attention_engine_run");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  write_text(work.dir + "/corpus.txt", text);
  const ProcessResult prep = run_tessera({"data", "prepare", "--input", work.dir + "/corpus.txt",
                                          "--out", work.dir + "/data", "--tokenizer", "bytes"});
  ASSERT_TRUE(prep.exited && prep.exit_code == 0) << prep.describe();
  write_text(work.dir + "/recipe.yaml",
             "model:\n  n_layer: 1\n  n_head: 1\n  n_embd: 64\n  vocab_size: 256\n"
             "  seq_len: 32\n"
             "data:\n  train: " + work.dir + "/data/train_*.bin\n"
             "train:\n  steps: 3\n  global_batch: 4\n  micro_batch: 2\n  device: cuda\n"
             "  precision: bf16\n  sample_tokens: 0\n"
             "optim:\n  warmup_steps: 0\n");
  struct Run {
    ProcessResult process;
    std::vector<nlohmann::json> events;
  };
  auto train = [&](const std::string& engine) {
    const std::string logs = work.dir + "/runs_" + engine;
    Run run;
    run.process = run_process(
        {TESSERA_EMULATED_GPU_BINARY, "train", work.dir + "/recipe.yaml", "--set",
         "kernels.attention=" + engine, "--set", "log.dir=" + logs, "--set",
         "checkpoint.dir=" + work.dir + "/ckpt_" + engine},
        work.dir, 120);
    EXPECT_TRUE(run.process.exited && run.process.exit_code == 0) << run.process.describe();
    const std::string log = only_run_log(logs);
    if (!log.empty()) run.events = read_run_log(log);
    return run;
  };
  const Run own = train("own"), cudnn = train("cudnn");
  ASSERT_FALSE(own.events.empty() || cudnn.events.empty());

  EXPECT_TRUE(own.process.err_lines().empty()) << own.process.describe();
  const std::vector<std::string> said = cudnn.process.err_lines();
  ASSERT_EQ(said.size(), 1u) << cudnn.process.describe();
  EXPECT_EQ(said[0].rfind("kernels.attention cudnn: ", 0), 0u) << said[0];
  const std::string tail = "; the attention runs on our flash kernel";
  EXPECT_TRUE(said[0].size() > tail.size() &&
              said[0].compare(said[0].size() - tail.size(), tail.size(), tail) == 0)
      << said[0];

  for (const Run* run : {&own, &cudnn})
    EXPECT_EQ(run->events[0].at("model").value("attention", ""), "flash") << run->events[0];
  EXPECT_NE(cudnn.events[0].value("recipe", "").find("attention: \"cudnn\""), std::string::npos);
  const std::vector<double> losses = metric_losses(own.events);
  EXPECT_EQ(losses.size(), 3u);
  EXPECT_EQ(metric_losses(cudnn.events), losses);  // bit for bit
}

}  // namespace
}  // namespace tessera
