// Pipeline and tensor parallelism without mpirun: a 2 x 2 (tp x pp) layout of GPT-2 (and
// of the llama family, tied and untied) whose four ranks are threads talking through
// ThreadCommunicator, one training step of two micro-batches under GPipe and 1F1B. The
// mean loss and every gradient (gathered over tp, found in the single-process model by its
// logical name) must match the single-process model to a relative 1e-6, the tied
// embedding's two copies included.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/train/pipeline.h"
#include "parallel/thread_communicator.h"

namespace tessera {
namespace {

constexpr int kTp = 2, kPp = 2, kMicro = 2, kB = 2, kT = 16;

GPTConfig tiny(GPTConfig cfg = {}) {
  cfg.n_layer = 4, cfg.n_head = 4, cfg.n_embd = 32, cfg.vocab_size = 255;
  cfg.padded_vocab_size = 256, cfg.seq_len = kT;
  return cfg;
}

double relative_l2(const std::vector<float>& a, const float* ref) {
  double err = 0, norm = 0;
  for (size_t k = 0; k < a.size(); k++)
    err += (a[k] - ref[k]) * (double)(a[k] - ref[k]), norm += ref[k] * (double)ref[k];
  return std::sqrt(err) / (std::sqrt(norm) + 1e-30);
}

void check_schedule(PipelineSchedule schedule, GPTConfig family = {}) {
  const GPTConfig cfg = tiny(family);
  std::vector<int32_t> x(kMicro * kB * kT), y(x.size());
  for (size_t i = 0; i < x.size(); i++) x[i] = (i * 37 + 11) % 255, y[i] = (i * 53 + 7) % 255;

  GPTModel ref(cfg, kB);
  ref.init_weights(3);
  double ref_loss = 0;
  for (int m = 0; m < kMicro; m++)
    ref_loss += ref.forward_backward(x.data() + m * kB * kT, y.data() + m * kB * kT, kB, kT,
                                     1.0f / kMicro) / kMicro;

  // Rank r is tp rank r % 2 of stage r / 2: a tp group per stage, a pp group per tp rank.
  std::vector<std::vector<std::unique_ptr<ThreadCommunicator>>> tp_groups, pp_groups;
  for (int s = 0; s < kPp; s++) tp_groups.push_back(make_thread_communicators(kTp, std::chrono::seconds(60)));
  for (int t = 0; t < kTp; t++) pp_groups.push_back(make_thread_communicators(kPp, std::chrono::seconds(60)));
  auto break_all = [&] {
    for (auto& g : tp_groups) g[0]->break_group();
    for (auto& g : pp_groups) g[0]->break_group();
  };
  run_on_threads(kTp * kPp, [&](int r) {
    const int t = r % kTp, s = r / kTp, layers = cfg.n_layer / kPp;
    Communicator& tp = *tp_groups[s][t];
    Communicator& pp = *pp_groups[t][s];
    const PipelineStage stage{s, kPp, s * layers, layers, &pp};
    GPTModel model(cfg, kB, TensorParallel{t, kTp, &tp}, 1, stage,
               PipelineEngine::slots_needed(schedule, s, kPp, kMicro));
    model.init_weights(3);
    PipelineEngine engine(model, schedule, kMicro, kB, kT);
    const double loss = engine.train_step(x.data(), y.data(), 1.0f / kMicro);
    engine.sum_tied_embedding_grads();
    EXPECT_NEAR(loss, ref_loss, 1e-6 * ref_loss) << "rank " << r;
    const auto& params = model.table().params();
    for (int i = 0; i < (int)params.size(); i++) {
      const std::vector<float> g = model.gather_logical(i, model.grads());
      const float* want = ref.grads() + ref.table().get(params[i].name).offset;
      EXPECT_LE(relative_l2(g, want), 1e-6) << params[i].name << " on rank " << r;
    }
  }, break_all);
}

TEST(PipelineThreads, GPipeMatchesSingleProcess) { check_schedule(PipelineSchedule::GPipe); }
TEST(PipelineThreads, OneFOneBMatchesSingleProcess) { check_schedule(PipelineSchedule::OneFOneB); }

TEST(PipelineThreads, LlamaMatchesSingleProcess) {
  GPTConfig llama;
  llama.family = Family::llama;
  llama.n_kv_head = 2;
  llama.intermediate_size = 48;
  check_schedule(PipelineSchedule::OneFOneB, llama);  // untied: the last stage's own lm_head
  llama.tie_embeddings = true;
  check_schedule(PipelineSchedule::GPipe, llama);  // tied: two copies of tok_embeddings
}

}  // namespace
}  // namespace tessera
