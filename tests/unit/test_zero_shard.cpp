// ZeRO-1 bookkeeping: the flat buffer split into equal ranges, AdamW on a range that
// starts and ends inside tensors (moments only for the range, weight decay per tensor),
// and the per-range square sums behind the global gradient norm.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "base/error.h"

namespace tessera {
namespace {

TEST(ZeroShard, ShardRangesAreEqualAndPartitionTheBuffer) {
  for (int parts : {1, 2, 3, 4}) {
    const int64_t n = 48 * parts;
    int64_t next = 0;
    for (int r = 0; r < parts; r++) {
      const FlatRange s = shard_range(n, parts, r);
      EXPECT_EQ(s.lo, next);
      EXPECT_EQ(s.size(), n / parts);
      next = s.hi;
    }
    EXPECT_EQ(next, n);
  }
  EXPECT_THROW(shard_range(10, 3, 0), Error);
  EXPECT_THROW(shard_range(12, 3, 3), Error);
}

TEST(ZeroShard, ModelFlatBuffersArePaddedToEqualAlignedRanges) {
  GPTConfig c;
  c.n_layer = 1, c.n_head = 2, c.n_embd = 16, c.vocab_size = 50, c.padded_vocab_size = 50;
  c.seq_len = 8;
  GPTModel plain(c, 1);
  EXPECT_EQ(plain.flat_size(), plain.table().total_numel());
  for (int dp : {2, 3, 4, 5}) {
    GPTModel m(c, 1, {}, dp);
    EXPECT_GE(m.flat_size(), m.table().total_numel());
    EXPECT_EQ(m.flat_size() % (16 * dp), 0) << dp;
    EXPECT_LT(m.flat_size() - m.table().total_numel(), 16 * dp);
    m.init_weights(1);
    for (int64_t i = m.table().total_numel(); i < m.flat_size(); i++) EXPECT_EQ(m.params()[i], 0.0f);
  }
}

TEST(ZeroShard, WeightDecayPerTensor) {
  ParamTable t;
  t.add("wte.weight", {4, 3}, Init::Normal, 0.02f, false);
  t.add("h.0.mlp.up.weight", {4, 3}, Init::Normal, 0.02f, true);
  t.add("h.0.mlp.up.bias", {4}, Init::Zeros, 0, false);
  OptimConfig o;
  EXPECT_FALSE(decays(t.get("wte.weight"), o));
  EXPECT_TRUE(decays(t.get("h.0.mlp.up.weight"), o));
  EXPECT_FALSE(decays(t.get("h.0.mlp.up.bias"), o));
  o.decay_embeddings = true;
  EXPECT_TRUE(decays(t.get("wte.weight"), o));
  EXPECT_FALSE(decays(t.get("h.0.mlp.up.bias"), o));
}

// A table whose tensors have odd sizes (alignment gaps between them), decayed and not,
// one of them tp-sharded.
ParamTable odd_table() {
  ParamTable t;
  t.add("wte.weight", {7, 5}, Init::Normal, 0.02f, false);
  t.add("wpe.weight", {3, 5}, Init::Normal, 0.02f, false);
  t.add("h.0.attn.qkv.weight", {10, 5}, Init::Normal, 0.02f, true, ShardSpec{0, 1, 0, 2});
  t.add("h.0.attn.qkv.bias", {10}, Init::Zeros, 0, false, ShardSpec{0, 1, 0, 2});
  t.add("h.0.mlp.down.weight", {5, 13}, Init::Normal, 0.02f, true);
  t.add("ln_f.bias", {5}, Init::Zeros, 0, false);
  return t;
}

std::vector<float> filled(int64_t n, float scale, int salt) {
  std::vector<float> x((size_t)n);
  for (int64_t i = 0; i < n; i++) x[i] = scale * std::sin(0.37f * (float)(i + 1) + (float)salt);
  return x;
}

// AdamW over ranges that partition the buffer, cutting tensors anywhere, gives exactly
// the whole-table AdamW: parameters, and moments as slices of the full moments.
void expect_ranges_match_full(const std::vector<int64_t>& cuts, bool decay_embeddings) {
  const ParamTable t = odd_table();
  const int64_t n = t.total_numel();
  OptimConfig o;
  o.weight_decay = 0.3;
  o.decay_embeddings = decay_embeddings;
  std::vector<float> full = filled(n, 1.0f, 0);
  std::vector<float> part = full;
  AdamW whole(t, o);
  std::vector<std::unique_ptr<AdamW>> shards;
  for (size_t k = 0; k + 1 < cuts.size(); k++)
    shards.push_back(std::make_unique<AdamW>(t, o, FlatRange{cuts[k], cuts[k + 1]}));
  for (int step = 1; step <= 3; step++) {
    const std::vector<float> g = filled(n, 0.1f * step, step);
    whole.step(full.data(), g.data(), 1e-2, step, 0.5f);
    for (auto& s : shards) s->step(part.data(), g.data(), 1e-2, step, 0.5f);
  }
  for (int64_t i = 0; i < n; i++) ASSERT_FLOAT_EQ(part[i], full[i]) << "element " << i;
  for (auto& s : shards) {
    EXPECT_EQ(s->range().size(), s->range().hi - s->range().lo);
    for (int64_t i = s->range().lo; i < s->range().hi; i++) {
      ASSERT_FLOAT_EQ(s->m()[i - s->range().lo], whole.m()[i]) << i;
      ASSERT_FLOAT_EQ(s->v()[i - s->range().lo], whole.v()[i]) << i;
    }
  }
}

TEST(ZeroShard, RangedAdamWMatchesWholeTable) {
  const int64_t n = odd_table().total_numel();
  expect_ranges_match_full({0, n}, false);
  expect_ranges_match_full({0, n / 2, n}, false);
  expect_ranges_match_full({0, 37, 41, 90, n}, false);  // cuts inside tensors
  expect_ranges_match_full({0, 37, 41, 90, n}, true);
  expect_ranges_match_full({0, 1, 2, 3, n - 1, n}, true);
}

TEST(ZeroShard, DecayAppliesOnlyToDecayedTensorsInsideTheRange) {
  const ParamTable t = odd_table();
  const int64_t n = t.total_numel();
  OptimConfig o;
  o.weight_decay = 0.5;
  const ParamInfo& w = t.get("h.0.mlp.down.weight");  // decayed
  const ParamInfo& b = t.get("ln_f.bias");            // not decayed
  // A range from the middle of w to the middle of b; zero gradients: only decay moves.
  const FlatRange r{w.offset + 10, b.offset + 2};
  AdamW a(t, o, r);
  std::vector<float> p(n, 1.0f), g(n, 0.0f);
  a.step(p.data(), g.data(), 0.1, 1);
  for (int64_t i = 0; i < n; i++) {
    const bool in_w = i >= r.lo && i < w.offset + w.numel;
    EXPECT_FLOAT_EQ(p[i], in_w ? 1.0f - 0.1f * 0.5f : 1.0f) << i;
  }
}

TEST(ZeroShard, RangeSquareSumsAddUpToTheWhole) {
  const ParamTable t = odd_table();
  const int64_t n = t.total_numel();
  std::vector<float> g = filled(n, 1.0f, 3);
  // Alignment gaps belong to no parameter: poison them, they must not count.
  std::vector<char> owned(n, 0);
  for (const auto& p : t.params())
    for (int64_t i = 0; i < p.numel; i++) owned[p.offset + i] = 1;
  for (int64_t i = 0; i < n; i++)
    if (!owned[i]) g[i] = 1e6f;
  double sharded = 0, replicated = 0;
  for (const auto& p : t.params())
    for (int64_t i = 0; i < p.numel; i++)
      (p.shard.sharded() ? sharded : replicated) += (double)g[p.offset + i] * g[p.offset + i];
  const SquareSums whole = range_sum_squares(t, g.data(), {0, n});
  EXPECT_NEAR(whole.sharded, sharded, 1e-9 * sharded);
  EXPECT_NEAR(whole.replicated, replicated, 1e-9 * replicated);
  SquareSums sum;
  const std::vector<int64_t> cuts = {0, 13, 50, 51, 100, n};
  for (size_t k = 0; k + 1 < cuts.size(); k++) {
    const SquareSums s = range_sum_squares(t, g.data(), {cuts[k], cuts[k + 1]});
    sum.sharded += s.sharded;
    sum.replicated += s.replicated;
  }
  EXPECT_NEAR(sum.sharded, sharded, 1e-9 * sharded);
  EXPECT_NEAR(sum.replicated, replicated, 1e-9 * replicated);
}

}  // namespace
}  // namespace tessera
