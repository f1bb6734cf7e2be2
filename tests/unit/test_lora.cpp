// LoRA in the GPT-2 module (framework/model/linear.h): a fresh adapter (B = 0) changes
// nothing, bit for bit; merging folds the adapters into the base weights, giving the same
// logits; the adapters' gradients agree with finite differences; the base is frozen.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/model/gpt_model.h"
#include "base/rng.h"

namespace tessera {
namespace {

GPTConfig tiny() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.vocab_size = 32, c.padded_vocab_size = 32;
  c.seq_len = 8;
  return c;
}

ModelOptions lora_options(int rank, kernels::Dtype precision = kernels::Dtype::fp32) {
  ModelOptions o;
  o.precision = precision;
  o.lora.rank = rank;
  o.lora.alpha = 8;
  for (LoraTarget t : block_linears(Family::gpt2)) o.lora.targets[(int)t] = true;
  return o;
}

struct Batch {
  std::vector<int32_t> x, y;
  int B = 2, T = 8;
};

Batch batch(int vocab) {
  Batch b;
  const CounterRng rng(7, "lora test tokens");
  for (int i = 0; i < b.B * b.T; i++) {
    b.x.push_back((int32_t)(rng.uniform(2 * i) * vocab) % vocab);
    b.y.push_back((int32_t)(rng.uniform(2 * i + 1) * vocab) % vocab);
  }
  return b;
}

std::vector<float> logits_of(GPTModel& m, const Batch& b) {
  m.forward(b.x.data(), nullptr, b.B, b.T);
  return std::vector<float>(m.logits(), m.logits() + (size_t)b.B * b.T * m.local_vocab());
}

// The base model's weights copied into a LoRA model's frozen base.
void copy_base(GPTModel& from, GPTModel& to) {
  ASSERT_EQ(from.base_table().total_numel(), to.base_table().total_numel());
  std::copy(from.base_params(), from.base_params() + from.base_table().total_numel(),
            to.base_params());
}

// Non-zero adapters: B ~ N(0, 0.05) (fresh adapters have B = 0).
void randomize_b(GPTModel& m) {
  for (const ParamInfo& p : m.table().params()) {
    if (p.name.find("lora_b") == std::string::npos) continue;
    const CounterRng rng(11, p.name);
    for (int64_t i = 0; i < p.numel; i++) m.params()[p.offset + i] = 0.05f * rng.normal(i);
  }
}

// The gradients in m.grads() (of the loss on b) against central differences of the fp32
// loss, at the element of every adapter with the largest gradient.
void expect_gradients_match_finite_differences(GPTModel& m, const Batch& b) {
  const std::vector<float> grads(m.grads(), m.grads() + m.flat_size());
  for (const ParamInfo& p : m.table().params()) {
    int64_t best = 0;
    for (int64_t i = 1; i < p.numel; i++)
      if (std::fabs(grads[p.offset + i]) > std::fabs(grads[p.offset + best])) best = i;
    float& w = m.params()[p.offset + best];
    const float keep = w, h = 1e-2f;
    w = keep + h;
    const double up = m.forward(b.x.data(), b.y.data(), b.B, b.T);
    w = keep - h;
    const double down = m.forward(b.x.data(), b.y.data(), b.B, b.T);
    w = keep;
    const double numeric = (up - down) / (2 * h), analytic = grads[p.offset + best];
    EXPECT_NEAR(analytic, numeric, 2e-2 * std::fabs(analytic) + 2e-4)
        << p.name << " element " << best;
  }
}

TEST(Lora, TableHoldsOnlyAdaptersAndBaseIsFrozen) {
  GPTModel m(tiny(), 2, {}, 1, {}, 1, lora_options(4));
  m.init_weights(3);
  EXPECT_TRUE(m.has_lora());
  EXPECT_EQ(m.table().params().size(), 2u * 4 * 2);  // 2 layers x 4 targets x (A, B)
  for (const ParamInfo& p : m.table().params())
    EXPECT_NE(p.name.find(".lora_"), std::string::npos) << p.name;
  EXPECT_EQ(m.table().get("h.1.mlp.down.lora_a").shape, (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(m.table().get("h.1.mlp.down.lora_b").shape, (std::vector<int64_t>{16, 4}));
  EXPECT_EQ(m.wte_index(), -1);
  // B starts at zero, A does not.
  double a2 = 0, b2 = 0;
  for (const ParamInfo& p : m.table().params())
    for (int64_t i = 0; i < p.numel; i++)
      (p.name.find("lora_a") != std::string::npos ? a2 : b2) +=
          m.params()[p.offset + i] * m.params()[p.offset + i];
  EXPECT_GT(a2, 0);
  EXPECT_EQ(b2, 0);
  // A step's gradients land in the adapters; the base weights do not move.
  const Batch b = batch(32);
  randomize_b(m);
  const std::vector<float> base(m.base_params(), m.base_params() + m.base_table().total_numel());
  m.zero_grad();
  m.forward_backward(b.x.data(), b.y.data(), b.B, b.T, 1.0f);
  double g2 = 0;
  for (int64_t i = 0; i < m.flat_size(); i++) g2 += m.grads()[i] * m.grads()[i];
  EXPECT_GT(g2, 0);
  EXPECT_EQ(std::vector<float>(m.base_params(), m.base_params() + base.size()), base);
}

TEST(Lora, FreshAdaptersGiveTheBaseLogitsBitForBit) {
  for (kernels::Dtype precision : {kernels::Dtype::fp32, kernels::Dtype::bf16}) {
    ModelOptions plain;
    plain.precision = precision;
    GPTModel base(tiny(), 2, {}, 1, {}, 1, plain);
    base.init_weights(5);
    GPTModel lora(tiny(), 2, {}, 1, {}, 1, lora_options(4, precision));
    lora.init_weights(99);  // other adapters' A; B = 0 whatever the seed
    copy_base(base, lora);
    const Batch b = batch(32);
    const std::vector<float> want = logits_of(base, b), got = logits_of(lora, b);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); i++)
      ASSERT_EQ(want[i], got[i]) << kernels::dtype_name(precision) << " logit " << i;
  }
}

TEST(Lora, MergedWeightsGiveTheAdaptersLogits) {
  GPTModel lora(tiny(), 2, {}, 1, {}, 1, lora_options(4));
  lora.init_weights(5);
  randomize_b(lora);
  const Batch b = batch(32);
  const std::vector<float> with_adapters = logits_of(lora, b);
  lora.merge_lora();  // folds B @ A into the base and zeroes B
  GPTModel merged(tiny(), 2);
  copy_base(lora, merged);
  const std::vector<float> got = logits_of(merged, b), again = logits_of(lora, b);
  double d2 = 0, n2 = 0, change2 = 0;
  for (size_t i = 0; i < got.size(); i++) {
    d2 += (got[i] - with_adapters[i]) * (got[i] - with_adapters[i]);
    n2 += with_adapters[i] * with_adapters[i];
    EXPECT_EQ(got[i], again[i]);  // B = 0 after merging: the LoRA model is its base
  }
  GPTModel original(tiny(), 2);
  original.init_weights(5);
  const std::vector<float> before = logits_of(original, b);
  for (size_t i = 0; i < got.size(); i++) change2 += (before[i] - got[i]) * (before[i] - got[i]);
  EXPECT_LT(std::sqrt(d2 / n2), 1e-5);
  EXPECT_GT(std::sqrt(change2 / n2), 1e-3);  // the adapters did change the model
}

// d(loss)/d(adapter element) against central differences of the fp32 loss, on the
// elements of every adapter with the largest gradients.
TEST(Lora, AdapterGradientsMatchFiniteDifferences) {
  GPTModel m(tiny(), 2, {}, 1, {}, 1, lora_options(2));
  m.init_weights(8);
  randomize_b(m);
  const Batch b = batch(32);
  m.zero_grad();
  m.forward_backward(b.x.data(), b.y.data(), b.B, b.T, 1.0f);
  expect_gradients_match_finite_differences(m, b);
}

// Dropout on the adapters' input: off unless a training key is set; with one, the same
// key gives the same mask (so finite differences hold) and the gradients match them.
TEST(Lora, DropoutOnlyInTrainingPassesAndItsGradients) {
  ModelOptions o = lora_options(2);
  o.lora.dropout = 0.3f;
  GPTModel m(tiny(), 2, {}, 1, {}, 1, o), plain(tiny(), 2, {}, 1, {}, 1, lora_options(2));
  m.init_weights(8), plain.init_weights(8);
  randomize_b(m), randomize_b(plain);
  const Batch b = batch(32);
  EXPECT_EQ(logits_of(m, b), logits_of(plain, b));  // no key: no dropout
  const float off = m.forward(b.x.data(), b.y.data(), b.B, b.T);
  m.set_dropout_key(0, {true, 5, 16});
  const float on = m.forward(b.x.data(), b.y.data(), b.B, b.T);
  EXPECT_NE(on, off);
  EXPECT_EQ(m.forward(b.x.data(), b.y.data(), b.B, b.T), on);  // same key, same mask
  m.set_dropout_key(0, {true, 6, 16});
  EXPECT_NE(m.forward(b.x.data(), b.y.data(), b.B, b.T), on);  // another step, another mask
  m.set_dropout_key(0, {true, 5, 16});
  m.zero_grad();
  m.forward_backward(b.x.data(), b.y.data(), b.B, b.T, 1.0f);
  expect_gradients_match_finite_differences(m, b);
}

}  // namespace
}  // namespace tessera
