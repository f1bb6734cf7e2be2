// Tensor-parallel GPT-2 under mpirun (tp = world size, 2 or 4): one forward/backward of
// the sharded model against the single-process model on every rank.
//  - loss equals tp = 1 (relative 1e-5), also for a vocabulary not divisible by tp;
//  - every gradient, gathered to its logical tensor, equals tp = 1's;
//  - gradients of replicated parameters are bitwise identical on every tp rank;
//  - the global grad norm and the greedy argmax equal tp = 1's.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <vector>

#include "tests/mpi/mpi_gtest_main.h"
#include "framework/model/gpt2.h"

namespace tessera {
namespace {

int world_rank() { int r; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
int world_size() { int s; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

void check_layout(int vocab, int vocab_padded) {
  GPTConfig cfg;
  cfg.n_layer = 2, cfg.n_head = 4, cfg.n_embd = 32, cfg.vocab_size = vocab;
  cfg.padded_vocab_size = vocab_padded, cfg.seq_len = 16;
  const int B = 2, T = 16, tp = world_size(), rank = world_rank();
  std::vector<int32_t> x(B * T), y(B * T);
  for (int i = 0; i < B * T; i++) x[i] = (i * 37 + 11) % vocab, y[i] = (i * 53 + 7) % vocab;
  y[3] = vocab - 1;  // a target in the last rank's range

  GPT2 ref(cfg, B);
  ref.init_weights(7);
  const float ref_loss = ref.forward_backward(x.data(), y.data(), B, T, 1.0f);
  GPT2 model(cfg, B, TensorParallel{rank, tp, MPI_COMM_WORLD});
  model.init_weights(7);
  const float loss = model.forward_backward(x.data(), y.data(), B, T, 1.0f);
  EXPECT_NEAR(loss, ref_loss, 1e-5 * std::fabs(ref_loss));

  const auto& params = model.table().params();
  for (int i = 0; i < (int)params.size(); i++) {
    const ParamInfo& p = params[i];
    const std::vector<float> g = model.gather_logical(i, model.grads());
    const float* r = ref.grads() + ref.table().params()[i].offset;
    double err = 0, norm = 0;
    for (size_t k = 0; k < g.size(); k++) err += (g[k] - r[k]) * (double)(g[k] - r[k]), norm += r[k] * (double)r[k];
    EXPECT_LE(std::sqrt(err), 1e-4 * std::sqrt(norm) + 1e-9) << p.name;
    if (!p.shard.sharded()) {  // replicated: identical bits on every tp rank
      std::vector<float> lo(model.grads() + p.offset, model.grads() + p.offset + p.numel), hi = lo;
      MPI_Allreduce(MPI_IN_PLACE, lo.data(), (int)p.numel, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
      MPI_Allreduce(MPI_IN_PLACE, hi.data(), (int)p.numel, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
      EXPECT_EQ(lo, hi) << p.name << " differs between tp ranks";
    }
  }
  EXPECT_NEAR(model.grad_norm(), ref.grad_norm(), 1e-5 * ref.grad_norm());

  ref.forward(x.data(), nullptr, 1, T);
  model.forward(x.data(), nullptr, 1, T);
  for (int t = 0; t < T; t++) EXPECT_EQ(model.argmax_token(t), ref.argmax_token(t)) << t;
  const float eval = model.forward(x.data(), y.data(), B, T);
  EXPECT_NEAR(eval, ref.forward(x.data(), y.data(), B, T), 1e-5 * std::fabs(ref_loss));
}

TEST(TensorParallelModel, MatchesSingleProcess) { check_layout(256, 256); }
TEST(TensorParallelModel, VocabularyNotDivisibleByTp) { check_layout(255, 255); }
TEST(TensorParallelModel, PaddedVocabulary) { check_layout(250, 253); }

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return run_mpi_gtests(argc, argv, MPI_THREAD_SINGLE); }
