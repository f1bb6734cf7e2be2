// The ops of a vocabulary-parallel model (kernels/ops.h) against the whole-vocabulary ops,
// with the vocabulary split over R = 1, 2, 3 shards the way a tensor-parallel group splits
// it: shard r holds columns / token rows r*Vl .. r*Vl + Vl - 1 of a vocabulary padded to
// R*Vl, of which the first n_real = clamp(V - r*Vl, 0, Vl) are real (the last shards hold
// padding, some only padding).
// - The embedding: the shards' forward outputs summed (the all-reduce) are encoder_forward's
//   to the bit, and the shards' backward gradients are encoder_backward's to the bit (the
//   same adds in the same order), with and without a position embedding.
// - The cross-entropy: stats per shard, concatenated (the all_gather), finished per shard;
//   the losses agree across the shards to the bit, and they and the reassembled gradient
//   agree with crossentropy_forward_backward on the full rows to kRelTol (the shards'
//   exponentials are taken against their own max and rescaled in the merge, and summed in
//   another grouping: a few float roundings apart).
// - add_bias against a loop written out here; the CPU backend forwards each op unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/ops.h"

namespace k = tessera::kernels;

namespace {

// Relative tolerance of the sharded cross-entropy against the whole-row one. Measured on
// these cases: float up to 2.4e-7 (a few ulps), double up to 3e-15; with one shard the CPU's
// results are the whole-row op's bits (the same row passes), but only ~1e-6 is promised.
template <typename T>
constexpr double kRelTol = sizeof(T) == 4 ? 1e-6 : 1e-12;

template <typename T>
std::vector<T> random_values(size_t n, unsigned seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = (T)dist(gen);
  return v;
}

std::vector<int32_t> random_tokens(size_t n, unsigned seed, int vocab) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(gen);
  return v;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0;
}

// A vocabulary of V tokens split over R shards of Vl rows (R * Vl >= V).
struct Split {
  int V, R, Vl;
  int Vp() const { return R * Vl; }
  int start(int r) const { return r * Vl; }
  int n_real(int r) const { return std::clamp(V - r * Vl, 0, Vl); }
};

// ---- embedding ------------------------------------------------------------------------

struct EmbeddingCase {
  int B, T, C;
  Split split;
  bool with_wpe;
};

// Tokens that hit every shard's first and last real row and repeat (a small vocabulary).
std::vector<int32_t> embedding_tokens(const EmbeddingCase& e) {
  auto inp = random_tokens((size_t)e.B * e.T, 11, e.split.V);
  for (int r = 0, i = 0; r < e.split.R && i + 1 < (int)inp.size(); r++) {
    if (e.split.n_real(r) == 0) continue;
    inp[(size_t)i++] = e.split.start(r);
    inp[(size_t)i++] = e.split.start(r) + e.split.n_real(r) - 1;
  }
  return inp;
}

void check_embedding_forward(const EmbeddingCase& e) {
  SCOPED_TRACE(testing::Message() << "B=" << e.B << " T=" << e.T << " C=" << e.C << " V="
                                  << e.split.V << " R=" << e.split.R << " Vl=" << e.split.Vl
                                  << " wpe=" << e.with_wpe);
  const int B = e.B, T = e.T, C = e.C;
  const size_t n_out = (size_t)B * T * C;
  const auto inp = embedding_tokens(e);
  // wte padded to Vp rows, as a sharded model stores it; the padding rows are never read.
  const auto wte = random_values<float>((size_t)e.split.Vp() * C, 12);
  const auto wpe = random_values<float>((size_t)T * C, 13);
  const std::vector<float> zero_wpe((size_t)T * C, 0.0f);
  // Without wpe the reference is the lookup plus an all-zero wpe: adding +0 changes no bits.
  std::vector<float> want(n_out);
  k::encoder_forward(want.data(), inp.data(), wte.data(), e.with_wpe ? wpe.data() : zero_wpe.data(),
                     B, T, C);

  std::vector<float> sum(n_out, 0.0f), out(n_out);
  for (int r = 0; r < e.split.R; r++) {
    const int start = e.split.start(r);
    std::fill(out.begin(), out.end(), NAN);  // every element must be written
    k::encoder_forward_vocab_shard(out.data(), inp.data(), wte.data() + (size_t)start * C,
                                   e.with_wpe ? wpe.data() : nullptr, B, T, C, start, e.split.Vl);
    for (size_t n = 0; n < (size_t)B * T; n++) {
      const bool mine = inp[n] >= start && inp[n] < start + e.split.Vl;
      for (int c = 0; c < C; c++) {
        const float v = out[n * C + c];
        if (!mine) {
          ASSERT_EQ(v, 0.0f) << "shard " << r << " wrote another shard's token";
        }
        sum[n * C + c] += v;  // the all-reduce, in rank order
      }
    }
  }
  EXPECT_TRUE(same_bits(sum, want));
}

void check_embedding_backward(const EmbeddingCase& e) {
  SCOPED_TRACE(testing::Message() << "B=" << e.B << " T=" << e.T << " C=" << e.C << " V="
                                  << e.split.V << " R=" << e.split.R << " Vl=" << e.split.Vl
                                  << " wpe=" << e.with_wpe);
  const int B = e.B, T = e.T, C = e.C;
  const auto inp = embedding_tokens(e);
  const auto dout = random_values<float>((size_t)B * T * C, 14);
  // Nonzero starting gradients: the backward adds into them.
  const auto dwte0 = random_values<float>((size_t)e.split.Vp() * C, 15);
  const auto dwpe0 = random_values<float>((size_t)T * C, 16);
  auto want_dwte = dwte0, want_dwpe = dwpe0;
  k::encoder_backward(want_dwte.data(), want_dwpe.data(), dout.data(), inp.data(), B, T, C);

  std::vector<float> dwte(dwte0.size());  // the shards' gradients, side by side
  for (int r = 0; r < e.split.R; r++) {
    const size_t offset = (size_t)e.split.start(r) * C, rows = (size_t)e.split.Vl * C;
    std::vector<float> shard(dwte0.begin() + offset, dwte0.begin() + offset + rows);
    auto dwpe = dwpe0;
    k::encoder_backward_vocab_shard(shard.data(), e.with_wpe ? dwpe.data() : nullptr, dout.data(),
                                    inp.data(), B, T, C, e.split.start(r), e.split.Vl);
    std::copy(shard.begin(), shard.end(), dwte.begin() + offset);
    // Every rank holds the replicated wpe and computes its whole gradient.
    EXPECT_TRUE(same_bits(dwpe, e.with_wpe ? want_dwpe : dwpe0)) << "dwpe of shard " << r;
  }
  EXPECT_TRUE(same_bits(dwte, want_dwte));
}

const EmbeddingCase kEmbeddingCases[] = {
    {2, 7, 16, {37, 1, 37}, true},   // one shard holding the whole vocabulary
    {2, 7, 16, {37, 1, 40}, false},
    {3, 5, 12, {11, 2, 6}, true},    // the last shard: 5 real rows of 6
    {3, 5, 12, {11, 2, 6}, false},
    {4, 9, 20, {10, 3, 6}, true},    // shard 2: padding only, none of the tokens
    {4, 9, 20, {10, 3, 6}, false},
    {2, 33, 40, {300, 3, 100}, true},  // C past the backward's 16-channel blocks
};

TEST(VocabShardKernels, EmbeddingForwardSummedOverShardsIsEncoderForward) {
  for (const EmbeddingCase& e : kEmbeddingCases) check_embedding_forward(e);
}

TEST(VocabShardKernels, EmbeddingBackwardOverShardsIsEncoderBackward) {
  for (const EmbeddingCase& e : kEmbeddingCases) check_embedding_backward(e);
}

// ---- cross-entropy --------------------------------------------------------------------

struct CrossentropyCase {
  int N;
  Split split;
};

// Real logits in [-4, 4) plus a per-row offset (the max subtraction matters), NaN in the
// padding columns (they must be ignored); targets anywhere, both ends of the vocabulary
// and both sides of every shard boundary included.
template <typename T>
std::vector<T> make_logits(const CrossentropyCase& c) {
  const int Vp = c.split.Vp();
  auto logits = random_values<T>((size_t)c.N * Vp, 21, -4.0, 4.0);
  for (int n = 0; n < c.N; n++)
    for (int j = 0; j < Vp; j++) {
      T& x = logits[(size_t)n * Vp + j];
      x = j < c.split.V ? x + T(10 * (n % 5)) : std::numeric_limits<T>::quiet_NaN();
    }
  return logits;
}

std::vector<int32_t> make_targets(const CrossentropyCase& c) {
  auto targets = random_tokens((size_t)c.N, 22, c.split.V);
  std::vector<int32_t> ends = {0, c.split.V - 1};
  for (int r = 1; r < c.split.R; r++)
    if (c.split.start(r) < c.split.V)
      ends.insert(ends.end(), {c.split.start(r) - 1, c.split.start(r)});
  for (size_t i = 0; i < ends.size() && i < targets.size(); i++) targets[i] = ends[i];
  return targets;
}

// Columns [start, start + Vl) of every row of m [N, Vp].
template <typename T>
std::vector<T> columns(const std::vector<T>& m, int N, int Vp, int start, int Vl) {
  std::vector<T> out((size_t)N * Vl);
  for (int n = 0; n < N; n++)
    std::copy_n(m.begin() + (size_t)n * Vp + start, Vl, out.begin() + (size_t)n * Vl);
  return out;
}

// max over i of |got - want| / |want|; sizes must match, want has no zeros.
template <typename T>
double max_relative_error(const std::vector<T>& got, const std::vector<T>& want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); i++)
    worst = std::max(worst, std::abs((double)got[i] - (double)want[i]) / std::abs((double)want[i]));
  return worst;
}

// The error of a gradient dlogits [N, Vp] = dloss * (p - onehot(target)): relative in the
// real columns other than the target (dloss * p, each to a few roundings whatever its
// size), relative to dloss in the target's column (dloss * (p - 1) cancels where p is
// near 1, so there the error is one of dloss * p's); the padding must be exactly 0.
template <typename T>
double max_gradient_error(const std::vector<T>& got, const std::vector<T>& want,
                          const std::vector<int32_t>& targets, int N, int V, int Vp, T dloss) {
  double worst = 0;
  for (int n = 0; n < N; n++)
    for (int j = 0; j < Vp; j++) {
      const size_t i = (size_t)n * Vp + j;
      const double err = std::abs((double)got[i] - (double)want[i]);
      if (j >= V) {
        EXPECT_EQ(got[i], T(0)) << "padding column " << j << " of row " << n;
      } else {
        worst = std::max(worst, err / std::abs(j == targets[n] ? (double)dloss : (double)want[i]));
      }
    }
  return worst;
}

// The sharded cross-entropy against crossentropy_forward_backward on the full rows.
// in_place: each shard's gradient overwrites its logits (as the model does).
template <typename T>
void check_crossentropy(const CrossentropyCase& c, bool in_place) {
  const Split& s = c.split;
  SCOPED_TRACE(testing::Message() << "N=" << c.N << " V=" << s.V << " R=" << s.R << " Vl=" << s.Vl
                                  << " in_place=" << in_place << " T=" << sizeof(T));
  const int N = c.N, Vp = s.Vp();
  const auto logits = make_logits<T>(c);
  const auto targets = make_targets(c);
  const T dloss = T(1) / T(N);
  std::vector<T> want_losses(N), want_dlogits((size_t)N * Vp);
  k::crossentropy_forward_backward(want_losses.data(), want_dlogits.data(), logits.data(),
                                   targets.data(), dloss, N, s.V, Vp);

  // Each rank's stats, concatenated in rank order: the all_gather.
  std::vector<T> all_stats((size_t)s.R * N * 3);
  for (int r = 0; r < s.R; r++) {
    const auto shard = columns(logits, N, Vp, s.start(r), s.Vl);
    k::crossentropy_shard_stats(all_stats.data() + (size_t)r * N * 3, shard.data(),
                                targets.data(), N, s.Vl, s.n_real(r), s.start(r));
  }
  std::vector<T> dlogits((size_t)N * Vp);
  std::vector<T> losses_of_rank_0;
  for (int r = 0; r < s.R; r++) {
    auto shard = columns(logits, N, Vp, s.start(r), s.Vl);
    // A separate gradient buffer starts as NaN: every element must be written.
    std::vector<T> separate(shard.size(), std::numeric_limits<T>::quiet_NaN());
    T* grad = in_place ? shard.data() : separate.data();
    std::vector<T> losses(N);
    k::crossentropy_shard_finish(losses.data(), grad, shard.data(), all_stats.data(), s.R,
                                 targets.data(), dloss, N, s.Vl, s.n_real(r), s.start(r));
    for (int n = 0; n < N; n++)
      std::copy_n(grad + (size_t)n * s.Vl, s.Vl, dlogits.begin() + (size_t)n * Vp + s.start(r));
    if (r == 0)
      losses_of_rank_0 = losses;
    else
      EXPECT_TRUE(same_bits(losses, losses_of_rank_0)) << "rank " << r << "'s losses differ";
  }
  EXPECT_LE(max_relative_error(losses_of_rank_0, want_losses), kRelTol<T>);
  EXPECT_LE(max_gradient_error(dlogits, want_dlogits, targets, N, s.V, Vp, dloss), kRelTol<T>);
}

const CrossentropyCase kCrossentropyCases[] = {
    {7, {37, 1, 40}},       // one shard: the whole padded vocabulary
    {7, {1000, 1, 1000}},   // one shard, no padding
    {6, {11, 2, 6}},        // the last shard: 5 real columns of 6
    {5, {1001, 2, 504}},    // 497 real of 504
    {9, {10, 3, 6}},        // shard 2: padding only (n_real 0)
    {4, {700, 3, 350}},     // shard 2: padding only
    {8, {1000, 3, 400}},    // shard 2: 200 real of 400
};

TEST(VocabShardKernels, ShardedCrossentropyIsTheWholeRowOne) {
  for (const CrossentropyCase& c : kCrossentropyCases) {
    check_crossentropy<float>(c, false);
    check_crossentropy<float>(c, true);
    check_crossentropy<double>(c, false);
  }
}

TEST(VocabShardKernels, ShardStatsOfAnEmptyShardMergeAsNothing) {
  // n_real == 0: the shard's stats are (-inf, 0, 0), and merged with a real shard's they
  // change nothing (no NaN from -inf - -inf).
  const int N = 2, Vl = 3;
  const std::vector<float> logits = {NAN, NAN, NAN, NAN, NAN, NAN};
  const std::vector<int32_t> targets = {0, 4};
  std::vector<float> stats(3 * N);
  k::crossentropy_shard_stats(stats.data(), logits.data(), targets.data(), N, Vl, 0, 3);
  for (int n = 0; n < N; n++) {
    EXPECT_EQ(stats[3 * n], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(stats[3 * n + 1], 0.0f);
    EXPECT_EQ(stats[3 * n + 2], 0.0f);
  }
  // Rank 0 real ({m, s, x_t} of a row whose softmax sum is 2), rank 1 the empty shard.
  const std::vector<float> all = {1.0f, 2.0f, 1.0f, 3.0f, 2.0f, 0.0f,  // rank 0
                                  stats[0], stats[1], stats[2], stats[3], stats[4], stats[5]};
  std::vector<float> losses(N), empty_grad(N * Vl, NAN);
  k::crossentropy_shard_finish(losses.data(), empty_grad.data(), logits.data(), all.data(), 2,
                               targets.data(), 0.5f, N, Vl, 0, 3);
  EXPECT_FLOAT_EQ(losses[0], std::log(2.0f));
  EXPECT_FLOAT_EQ(losses[1], std::log(2.0f) + 3.0f);
  for (float g : empty_grad) EXPECT_EQ(g, 0.0f);  // padding only: zeros, not NaN
}

// ---- add_bias -------------------------------------------------------------------------

template <typename T>
void check_add_bias(int N, int OC) {
  const auto out0 = random_values<T>((size_t)N * OC, 31);
  const auto bias = random_values<T>((size_t)OC, 32);
  auto out = out0;
  k::add_bias(out.data(), bias.data(), N, OC);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++)
      ASSERT_EQ(out[(size_t)n * OC + o], out0[(size_t)n * OC + o] + bias[o]) << n << ", " << o;
}

TEST(VocabShardKernels, AddBiasAddsTheBiasToEveryRow) {
  check_add_bias<float>(7, 13);
  check_add_bias<double>(7, 13);
  check_add_bias<float>(1, 1);
}

// ---- the CPU backend ------------------------------------------------------------------

TEST(VocabShardKernels, CpuBackendForwardsToTheOps) {
  k::Backend& be = k::cpu_backend();
  const int B = 2, T = 5, C = 8, start = 6, rows = 6, N = B * T;
  const auto inp = random_tokens((size_t)N, 41, 12);
  const auto wte = random_values<float>((size_t)rows * C, 42);
  const auto wpe = random_values<float>((size_t)T * C, 43);
  std::vector<float> out(N * C), want(N * C);
  be.encoder_forward_vocab_shard(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C, start,
                                 rows);
  k::encoder_forward_vocab_shard(want.data(), inp.data(), wte.data(), wpe.data(), B, T, C, start,
                                 rows);
  EXPECT_TRUE(same_bits(out, want));

  std::vector<float> dwte(rows * C, 0.0f), dwpe(T * C, 0.0f), want_dwte = dwte, want_dwpe = dwpe;
  be.encoder_backward_vocab_shard(dwte.data(), dwpe.data(), wte.data() /* as dout */, inp.data(),
                                  1, T, C, start, rows);
  k::encoder_backward_vocab_shard(want_dwte.data(), want_dwpe.data(), wte.data(), inp.data(), 1, T,
                                  C, start, rows);
  EXPECT_TRUE(same_bits(dwte, want_dwte));
  EXPECT_TRUE(same_bits(dwpe, want_dwpe));

  auto biased = out, want_biased = out;
  be.add_bias(biased.data(), wpe.data(), N, C);
  k::add_bias(want_biased.data(), wpe.data(), N, C);
  EXPECT_TRUE(same_bits(biased, want_biased));

  const int Vl = 8, n_real = 7;
  const auto logits = random_values<float>((size_t)N * Vl, 44);
  const auto targets = random_tokens((size_t)N, 45, 16);
  std::vector<float> stats(3 * N), want_stats(3 * N);
  be.crossentropy_shard_stats(stats.data(), logits.data(), targets.data(), N, Vl, n_real, 8);
  k::crossentropy_shard_stats(want_stats.data(), logits.data(), targets.data(), N, Vl, n_real, 8);
  EXPECT_TRUE(same_bits(stats, want_stats));
  std::vector<float> losses(N), want_losses(N), grad(N * Vl), want_grad(N * Vl);
  be.crossentropy_shard_finish(losses.data(), grad.data(), logits.data(), stats.data(), 1,
                               targets.data(), 0.1f, N, Vl, n_real, 8);
  k::crossentropy_shard_finish(want_losses.data(), want_grad.data(), logits.data(), stats.data(), 1,
                               targets.data(), 0.1f, N, Vl, n_real, 8);
  EXPECT_TRUE(same_bits(losses, want_losses));
  EXPECT_TRUE(same_bits(grad, want_grad));
}

}  // namespace
