// Mixed precision in the GPT-2 module: bf16 and fp16 GEMMs over fp32 master weights
// compute what fp32 computes up to the 16-bit roundings (and do round: the results
// differ from fp32); the 16-bit weight copy follows every write to the parameters;
// stochastic rounding is deterministic for a seed and stays close to fp32.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "base/rng.h"

namespace tessera {
namespace {

using kernels::Dtype;

GPTConfig small(Family family = Family::gpt2) {
  GPTConfig c;
  c.family = family;
  c.n_kv_head = 1, c.intermediate_size = 48;  // llama only
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.vocab_size = 64, c.padded_vocab_size = 64;
  c.seq_len = 16;
  return c;
}

ModelOptions precision(Dtype dt, bool stochastic = false) {
  ModelOptions o;
  o.precision = dt;
  o.stochastic_rounding = stochastic;
  o.seed = 21;
  return o;
}

struct Pass {
  std::vector<float> logits, grads;
  float loss = 0;
};

Pass run(GPTModel& m) {
  const int B = 2, T = 16, V = m.config().vocab_size;
  const CounterRng rng(3, "mixed precision tokens");
  std::vector<int32_t> x(B * T), y(B * T);
  for (int i = 0; i < B * T; i++) {
    x[i] = (int32_t)(rng.uniform(2 * i) * V) % V;
    y[i] = (int32_t)(rng.uniform(2 * i + 1) * V) % V;
  }
  Pass r;
  m.forward(x.data(), nullptr, B, T);
  r.logits.assign(m.logits(), m.logits() + (size_t)B * T * m.local_vocab());
  m.zero_grad();
  r.loss = m.forward_backward(x.data(), y.data(), B, T, 1.0f);
  r.grads.assign(m.grads(), m.grads() + m.flat_size());
  return r;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double d2 = 0, n2 = 0;
  for (size_t i = 0; i < a.size(); i++) d2 += (a[i] - b[i]) * (a[i] - b[i]), n2 += a[i] * a[i];
  return std::sqrt(d2 / n2);
}

void expect_tracks_fp32(Family family) {
  GPTModel fp32(small(family), 2);
  fp32.init_weights(4);
  const Pass want = run(fp32);
  // The 16-bit roundings' relative size: bf16 2^-9, fp16 2^-12 (per operand).
  for (auto [dt, tol_logits, tol_grads] :
       {std::tuple{Dtype::bf16, 2e-2, 6e-2}, std::tuple{Dtype::fp16, 3e-3, 1e-2}}) {
    GPTModel m(small(family), 2, {}, 1, {}, 1, precision(dt));
    m.init_weights(4);
    const Pass got = run(m);
    const double dl = rel_l2(want.logits, got.logits), dg = rel_l2(want.grads, got.grads);
    EXPECT_LT(dl, tol_logits) << kernels::dtype_name(dt);
    EXPECT_LT(dg, tol_grads) << kernels::dtype_name(dt);
    EXPECT_GT(dl, 1e-6) << kernels::dtype_name(dt) << ": no rounding happened";
    EXPECT_NEAR(got.loss, want.loss, 1e-2 * want.loss) << kernels::dtype_name(dt);
  }
}

TEST(MixedPrecision, TracksFp32UpToTheRoundings) { expect_tracks_fp32(Family::gpt2); }
TEST(MixedPrecision, LlamaTracksFp32UpToTheRoundings) { expect_tracks_fp32(Family::llama); }

TEST(MixedPrecision, SixteenBitCopyFollowsWritesToTheParameters) {
  GPTModel a(small(), 2, {}, 1, {}, 1, precision(Dtype::bf16));
  a.init_weights(4);
  run(a);  // the 16-bit copy of the initial weights is made
  for (int64_t i = 0; i < a.flat_size(); i++) a.params()[i] *= 0.5f;
  GPTModel b(small(), 2, {}, 1, {}, 1, precision(Dtype::bf16));
  b.init_weights(4);
  for (int64_t i = 0; i < b.flat_size(); i++) b.params()[i] *= 0.5f;
  EXPECT_EQ(run(a).logits, run(b).logits);
}

TEST(MixedPrecision, StochasticRoundingIsSeededAndClose) {
  GPTModel nearest(small(), 2, {}, 1, {}, 1, precision(Dtype::bf16));
  GPTModel s1(small(), 2, {}, 1, {}, 1, precision(Dtype::bf16, true));
  GPTModel s2(small(), 2, {}, 1, {}, 1, precision(Dtype::bf16, true));
  GPTModel fp32(small(), 2);
  for (GPTModel* m : {&nearest, &s1, &s2, &fp32}) m->init_weights(4);
  const Pass n = run(nearest), r1 = run(s1), r2 = run(s2), want = run(fp32);
  EXPECT_EQ(r1.logits, r2.logits);  // same seed, same bits
  EXPECT_NE(r1.logits, n.logits);   // another rounding than nearest-even
  EXPECT_LT(rel_l2(want.logits, r1.logits), 3e-2);
}

// AdamW writing the 16-bit copy in its pass gives the copy a refresh would make, for
// both 16-bit types: the same parameters and the same next forward pass, bit for bit.
TEST(MixedPrecision, AdamWWritesTheSixteenBitCopy) {
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    GPTModel fused(small(), 2, {}, 1, {}, 1, precision(dt));
    GPTModel plain(small(), 2, {}, 1, {}, 1, precision(dt));
    OptimConfig optim;
    AdamW fused_adamw(fused.table(), optim), plain_adamw(plain.table(), optim);
    for (GPTModel* m : {&fused, &plain}) m->init_weights(4), run(*m);
    float* p = fused.params();
    fused_adamw.step(p, fused.grads(), 1e-2, 1, 1.0f, fused.weights16_for_full_update(), dt);
    plain_adamw.step(plain.params(), plain.grads(), 1e-2, 1, 1.0f);
    EXPECT_EQ(std::vector<float>(fused.params(), fused.params() + fused.flat_size()),
              std::vector<float>(plain.params(), plain.params() + plain.flat_size()));
    EXPECT_EQ(run(fused).logits, run(plain).logits) << kernels::dtype_name(dt);
  }
  GPTModel fp32(small(), 2);
  EXPECT_EQ(fp32.weights16_for_full_update(), nullptr);
}

}  // namespace
}  // namespace tessera
