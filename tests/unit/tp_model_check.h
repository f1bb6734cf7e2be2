// One forward/backward of a tensor-parallel model (GPT-2, or the family and llama keys of
// `base`) against the single-process model, run by
// every rank of the tp group `tp` (MPI processes in tests/mpi/test_tp_model.cpp, threads
// in tests/unit/test_tp_threads.cpp):
//  - the loss equals tp = 1's (relative `tol`), also for a vocabulary not divisible by tp;
//  - every gradient, gathered to its logical tensor, equals tp = 1's (relative `tol` in
//    the L2 norm);
//  - gradients of replicated parameters are bitwise identical on every tp rank;
//  - the global grad norm, the greedy argmax and an evaluation loss equal tp = 1's.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/model/gpt_model.h"
#include "parallel/communicator.h"

namespace tessera {

inline void check_tp_model(Communicator& tp, int vocab, int vocab_padded, double tol,
                           GPTConfig cfg = {}) {
  cfg.n_layer = 2, cfg.n_head = 4, cfg.n_embd = 32, cfg.vocab_size = vocab;
  cfg.padded_vocab_size = vocab_padded, cfg.seq_len = 16;
  const int B = 2, T = 16;
  std::vector<int32_t> x(B * T), y(B * T);
  for (int i = 0; i < B * T; i++) x[i] = (i * 37 + 11) % vocab, y[i] = (i * 53 + 7) % vocab;
  y[3] = vocab - 1;  // a target in the last rank's range

  GPTModel ref(cfg, B);
  ref.init_weights(7);
  const float ref_loss = ref.forward_backward(x.data(), y.data(), B, T, 1.0f);
  GPTModel model(cfg, B, TensorParallel{tp.rank(), tp.size(), &tp});
  model.init_weights(7);
  const float loss = model.forward_backward(x.data(), y.data(), B, T, 1.0f);
  EXPECT_NEAR(loss, ref_loss, tol * std::fabs(ref_loss));

  const auto& params = model.table().params();
  for (int i = 0; i < (int)params.size(); i++) {
    const ParamInfo& p = params[i];
    const std::vector<float> g = model.gather_logical(i, model.grads());
    const float* r = ref.grads() + ref.table().params()[i].offset;
    double err = 0, norm = 0;
    for (size_t k = 0; k < g.size(); k++)
      err += (g[k] - r[k]) * (double)(g[k] - r[k]), norm += r[k] * (double)r[k];
    EXPECT_LE(std::sqrt(err), tol * std::sqrt(norm) + 1e-9) << p.name;
    if (!p.shard.sharded()) {  // replicated: identical bits on every tp rank
      std::vector<float> lo(model.grads() + p.offset, model.grads() + p.offset + p.numel), hi = lo;
      tp.all_reduce(lo.data(), p.numel, ScalarType::f32, ReduceOp::min);
      tp.all_reduce(hi.data(), p.numel, ScalarType::f32, ReduceOp::max);
      EXPECT_EQ(lo, hi) << p.name << " differs between tp ranks";
    }
  }
  EXPECT_NEAR(model.grad_norm(), ref.grad_norm(), tol * ref.grad_norm());

  ref.forward(x.data(), nullptr, 1, T);
  model.forward(x.data(), nullptr, 1, T);
  for (int t = 0; t < T; t++) EXPECT_EQ(model.argmax_token(t), ref.argmax_token(t)) << t;
  const float eval = model.forward(x.data(), y.data(), B, T);
  EXPECT_NEAR(eval, ref.forward(x.data(), y.data(), B, T), tol * std::fabs(ref_loss));
}

}  // namespace tessera
