// The GPU ops of a vocabulary-parallel model against their CPU twins (kernels/ops.h):
// - the embedding shard (kernels/cuda/encoder.cu: encoder_forward_vocab_shard, and
//   encoder_backward on build_token_buckets of the shard) adds one float at a time in the
//   CPU's order, so forward and backward are compared to the bit: tolerance 0;
// - add_bias (residual.cu): one add per element, to the bit;
// - the cross-entropy shard ops (crossentropy.cu): the max and the target's logit are
//   exact; the sums of exponentials and everything made from them use expf for the CPU's
//   vexp and another summation order, so they are held to kTol = 1e-5 relative (floor
//   1e-3), the tolerance of test_crossentropy.cpp's whole-row op.
// Shapes include odd N, Vl not a multiple of 4, n_real < Vl and n_real == 0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kTol = 1e-5;

// ---- embedding ------------------------------------------------------------------------

// A shard of `rows` token rows from vocab_start, in a vocabulary of V tokens.
struct EmbeddingCase {
  int B, T, C, V, vocab_start, rows;
  bool with_wpe;
};

void check_forward(const EmbeddingCase& e) {
  SCOPED_TRACE(testing::Message() << "B=" << e.B << " T=" << e.T << " C=" << e.C << " V=" << e.V
                                  << " start=" << e.vocab_start << " rows=" << e.rows
                                  << " wpe=" << e.with_wpe);
  const int64_t BT = (int64_t)e.B * e.T;
  const auto inp = random_tokens(BT, 1, e.V);
  const auto wte = random_floats((int64_t)e.rows * e.C, 2);
  const auto wpe = random_floats((int64_t)e.T * e.C, 3);
  std::vector<float> want(BT * e.C);
  kernels::encoder_forward_vocab_shard(want.data(), inp.data(), wte.data(),
                                       e.with_wpe ? wpe.data() : nullptr, e.B, e.T, e.C,
                                       e.vocab_start, e.rows);
  // NaN to start with: every element must be written, the zeros of other shards too.
  auto d_out = DeviceArray<float>::from_host(std::vector<float>(want.size(), NAN));
  auto d_inp = DeviceArray<int32_t>::from_host(inp);
  auto d_wte = DeviceArray<float>::from_host(wte), d_wpe = DeviceArray<float>::from_host(wpe);
  cuda::encoder_forward_vocab_shard(d_out.data(), d_inp.data(), d_wte.data(),
                                    e.with_wpe ? d_wpe.data() : nullptr, e.B, e.T, e.C,
                                    e.vocab_start, e.rows, nullptr);
  const auto got = d_out.download();
  EXPECT_BITWISE_EQUAL(got, want);
}

void check_backward(const EmbeddingCase& e) {
  SCOPED_TRACE(testing::Message() << "B=" << e.B << " T=" << e.T << " C=" << e.C << " V=" << e.V
                                  << " start=" << e.vocab_start << " rows=" << e.rows
                                  << " wpe=" << e.with_wpe);
  const int64_t BT = (int64_t)e.B * e.T;
  const auto inp = random_tokens(BT, 4, e.V);
  const auto dout = random_floats(BT * e.C, 5);
  // Nonzero starting gradients: the backward adds into them.
  auto want_dwte = random_floats((int64_t)e.rows * e.C, 6);
  auto want_dwpe = random_floats((int64_t)e.T * e.C, 7);
  const auto buckets = cuda::build_token_buckets(inp.data(), e.B, e.T, e.vocab_start, e.rows);
  auto d_dwte = DeviceArray<float>::from_host(want_dwte);
  auto d_dwpe = DeviceArray<float>::from_host(want_dwpe);
  auto d_dout = DeviceArray<float>::from_host(dout);
  encoder_backward_on_buckets(d_dwte.data(), e.with_wpe ? d_dwpe.data() : nullptr, d_dout.data(),
                              buckets, e.B, e.T, e.C);
  kernels::encoder_backward_vocab_shard(want_dwte.data(), e.with_wpe ? want_dwpe.data() : nullptr,
                                        dout.data(), inp.data(), e.B, e.T, e.C, e.vocab_start,
                                        e.rows);
  const auto dwte = d_dwte.download(), dwpe = d_dwpe.download();
  EXPECT_BITWISE_EQUAL(dwte, want_dwte);
  EXPECT_BITWISE_EQUAL(dwpe, want_dwpe);  // without wpe: both left as they started
}

const EmbeddingCase kEmbeddingCases[] = {
    {3, 17, 64, 50, 0, 50, true},     // the whole vocabulary; float4 path
    {3, 17, 64, 50, 20, 17, true},    // a middle shard
    {3, 17, 64, 50, 40, 17, false},   // the last shard, past V (padding rows), no wpe
    {2, 9, 37, 20, 7, 6, true},       // scalar path
    {2, 9, 37, 20, 7, 6, false},
    {2, 9, 36, 20, 20, 10, true},     // padding only: none of the batch's tokens
    {2, 5, 300, 1000, 300, 400, false},  // C past one block of channels
};

TEST(CudaVocabShard, BucketsListOnlyTheShardsTokensAsShardRows) {
  const std::vector<int32_t> inp = {5, 2, 5, 9, 2, 7};  // B=2, T=3
  const auto b = cuda::build_token_buckets(inp.data(), 2, 3, 4, 4);  // tokens 4..7
  EXPECT_EQ(b.bucket_tokens, (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(b.bucket_start, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 2, 5}));
  const auto none = cuda::build_token_buckets(inp.data(), 2, 3, 10, 4);
  EXPECT_TRUE(none.bucket_tokens.empty());
  EXPECT_EQ(none.bucket_start, (std::vector<int32_t>{0}));
  EXPECT_TRUE(none.positions.empty());
}

TEST(CudaVocabShard, EmbeddingForwardMatchesCpuExactly) {
  REQUIRE_GPU();
  for (const EmbeddingCase& e : kEmbeddingCases) check_forward(e);
  if (!small_shapes()) check_forward({8, 1024, 768, 50257, 25152, 25152, true});
}

TEST(CudaVocabShard, EmbeddingBackwardMatchesCpuExactly) {
  REQUIRE_GPU();
  for (const EmbeddingCase& e : kEmbeddingCases) check_backward(e);
  if (!small_shapes()) check_backward({8, 1024, 768, 50257, 25152, 25152, true});
}

// ---- add_bias -------------------------------------------------------------------------

TEST(CudaVocabShard, AddBiasMatchesCpuExactly) {
  REQUIRE_GPU();
  for (const auto& [N, OC] : {std::pair{7, 13}, std::pair{4, 64}, std::pair{1, 1}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " OC=" << OC);
    auto want = random_floats((int64_t)N * OC, 8);
    const auto bias = random_floats(OC, 9);
    auto d_out = DeviceArray<float>::from_host(want);
    auto d_bias = DeviceArray<float>::from_host(bias);
    cuda::add_bias(d_out.data(), d_bias.data(), N, OC, nullptr);
    kernels::add_bias(want.data(), bias.data(), N, OC);
    const auto got = d_out.download();
    EXPECT_BITWISE_EQUAL(got, want);
  }
}

// ---- cross-entropy --------------------------------------------------------------------

// A vocabulary of V tokens in R shards of Vl columns (R * Vl >= V); shard r starts at
// r * Vl and has n_real(r) real columns.
struct Split {
  int N, V, R, Vl;
  int Vp() const { return R * Vl; }
  int start(int r) const { return r * Vl; }
  int n_real(int r) const { return std::max(0, std::min(V - r * Vl, Vl)); }
};

// Real logits in [-4, 4) plus a per-row offset, NaN in the padding (it must be ignored).
std::vector<float> make_logits(const Split& s) {
  auto logits = random_floats((int64_t)s.N * s.Vp(), 11, -4.0f, 4.0f);
  for (int n = 0; n < s.N; n++)
    for (int j = 0; j < s.Vp(); j++) {
      float& x = logits[(size_t)n * s.Vp() + j];
      x = j < s.V ? x + 10.0f * (n % 5) : NAN;
    }
  return logits;
}
std::vector<int32_t> make_targets(const Split& s) {
  auto targets = random_tokens(s.N, 12, s.V);
  targets[0] = 0;
  if (s.N > 1) targets[1] = s.V - 1;
  if (s.N > 2 && s.R > 1) targets[2] = s.Vl;  // the first column of shard 1
  return targets;
}
// Columns [start, start + Vl) of every row of m [N, Vp].
std::vector<float> columns(const std::vector<float>& m, const Split& s, int r) {
  std::vector<float> out((size_t)s.N * s.Vl);
  for (int n = 0; n < s.N; n++)
    std::copy_n(m.begin() + (size_t)n * s.Vp() + s.start(r), s.Vl, out.begin() + (size_t)n * s.Vl);
  return out;
}
// Column k of stats [rows, 3].
std::vector<float> stat(const std::vector<float>& stats, int k) {
  std::vector<float> out(stats.size() / 3);
  for (size_t i = 0; i < out.size(); i++) out[i] = stats[3 * i + k];
  return out;
}

// All the ranks' stats [R, N, 3] on the CPU, in rank order (the all_gather).
std::vector<float> cpu_all_stats(const Split& s, const std::vector<float>& logits,
                                 const std::vector<int32_t>& targets) {
  std::vector<float> all((size_t)s.R * s.N * 3);
  for (int r = 0; r < s.R; r++) {
    const auto shard = columns(logits, s, r);
    kernels::crossentropy_shard_stats(all.data() + (size_t)r * s.N * 3, shard.data(),
                                      targets.data(), s.N, s.Vl, s.n_real(r), s.start(r));
  }
  return all;
}

void check_stats(const Split& s) {
  const auto logits = make_logits(s);
  const auto targets = make_targets(s);
  auto d_targets = DeviceArray<int32_t>::from_host(targets);
  const auto want_all = cpu_all_stats(s, logits, targets);
  for (int r = 0; r < s.R; r++) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " V=" << s.V << " R=" << s.R
                                    << " Vl=" << s.Vl << " rank " << r);
    const std::vector<float> want(want_all.begin() + (size_t)r * s.N * 3,
                                  want_all.begin() + (size_t)(r + 1) * s.N * 3);
    auto d_logits = DeviceArray<float>::from_host(columns(logits, s, r));
    DeviceArray<float> d_stats(3 * (int64_t)s.N);
    cuda::crossentropy_shard_stats(d_stats.data(), d_logits.data(), d_targets.data(), s.N, s.Vl,
                                   s.n_real(r), s.start(r), nullptr);
    const auto got = d_stats.download();
    const auto got_m = stat(got, 0), want_m = stat(want, 0);
    const auto got_t = stat(got, 2), want_t = stat(want, 2);
    EXPECT_BITWISE_EQUAL(got_m, want_m);  // a max is exact (-inf for an empty shard)
    EXPECT_BITWISE_EQUAL(got_t, want_t);  // a copy, or 0
    EXPECT_CLOSE(stat(got, 1), stat(want, 1), kTol);
  }
}

enum class Grad { separate, in_place, none };

// The GPU's finish against the CPU's on the same (CPU) stats, every rank.
void check_finish(const Split& s, Grad grad) {
  const auto logits = make_logits(s);
  const auto targets = make_targets(s);
  const auto all_stats = cpu_all_stats(s, logits, targets);
  auto d_targets = DeviceArray<int32_t>::from_host(targets);
  auto d_all_stats = DeviceArray<float>::from_host(all_stats);
  const float dloss = 1.0f / (float)s.N;
  for (int r = 0; r < s.R; r++) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " V=" << s.V << " R=" << s.R
                                    << " Vl=" << s.Vl << " rank " << r << " grad=" << (int)grad);
    const auto shard = columns(logits, s, r);
    std::vector<float> want_losses(s.N), want_dlogits(shard.size());
    kernels::crossentropy_shard_finish(want_losses.data(),
                                       grad == Grad::none ? nullptr : want_dlogits.data(),
                                       shard.data(), all_stats.data(), s.R, targets.data(), dloss,
                                       s.N, s.Vl, s.n_real(r), s.start(r));
    auto d_logits = DeviceArray<float>::from_host(shard);
    // A separate gradient buffer starts as NaN: every element must be written.
    auto d_dlogits = DeviceArray<float>::from_host(std::vector<float>(shard.size(), NAN));
    DeviceArray<float> d_losses(s.N);
    float* dlogits = grad == Grad::separate  ? d_dlogits.data()
                     : grad == Grad::in_place ? d_logits.data()
                                              : nullptr;
    cuda::crossentropy_shard_finish(d_losses.data(), dlogits, d_logits.data(), d_all_stats.data(),
                                    s.R, d_targets.data(), dloss, s.N, s.Vl, s.n_real(r),
                                    s.start(r), nullptr);
    EXPECT_CLOSE(d_losses.download(), want_losses, kTol);
    if (grad == Grad::separate) EXPECT_CLOSE(d_dlogits.download(), want_dlogits, kTol);
    if (grad == Grad::in_place) EXPECT_CLOSE(d_logits.download(), want_dlogits, kTol);
    if (grad != Grad::in_place) {
      const auto after = d_logits.download();
      EXPECT_BITWISE_EQUAL(after, shard);  // the logits are left alone
    }
  }
}

const Split kSplits[] = {
    {5, 1000, 1, 1024},  // one shard, float4 columns, 24 padding columns
    {5, 37, 1, 37},      // one shard, Vl % 4 != 0, no padding
    {7, 1001, 2, 502},   // float4 columns; the last shard: 499 real of 502
    {3, 701, 2, 351},    // Vl odd: one column at a time; 350 real in the last
    {9, 10, 3, 6},       // tiny: shard 2 is padding only (n_real 0)
    {4, 700, 3, 350},    // shard 2 padding only, Vl % 4 != 0
};

TEST(CudaVocabShard, CrossentropyStatsMatchCpu) {
  REQUIRE_GPU();
  for (const Split& s : kSplits) check_stats(s);
  if (!small_shapes()) check_stats({1024, 50257, 2, 25152});
}

TEST(CudaVocabShard, CrossentropyFinishMatchesCpu) {
  REQUIRE_GPU();
  for (const Split& s : kSplits) {
    check_finish(s, Grad::separate);
    check_finish(s, Grad::in_place);
    check_finish(s, Grad::none);
  }
  if (!small_shapes()) check_finish({1024, 50257, 2, 25152}, Grad::in_place);
}

// stats on each "rank", the all_gather as a device copy, finish: the whole-row CPU op's
// losses and gradient (kTol, the same as the GPU's whole-row op is held to), and the
// losses of every rank identical to the bit.
TEST(CudaVocabShard, ShardedCrossentropyOnTheGpuIsTheWholeRowOne) {
  REQUIRE_GPU();
  for (const Split& s : kSplits) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " V=" << s.V << " R=" << s.R
                                    << " Vl=" << s.Vl);
    const auto logits = make_logits(s);
    const auto targets = make_targets(s);
    const float dloss = 0.5f;
    std::vector<float> want_losses(s.N), want_dlogits((size_t)s.N * s.Vp());
    kernels::crossentropy_forward_backward(want_losses.data(), want_dlogits.data(), logits.data(),
                                           targets.data(), dloss, s.N, s.V, s.Vp());
    auto d_targets = DeviceArray<int32_t>::from_host(targets);
    DeviceArray<float> d_all_stats((int64_t)s.R * s.N * 3);
    std::vector<DeviceArray<float>> d_shards;
    for (int r = 0; r < s.R; r++) {
      d_shards.push_back(DeviceArray<float>::from_host(columns(logits, s, r)));
      cuda::crossentropy_shard_stats(d_all_stats.data() + (int64_t)r * s.N * 3,
                                     d_shards[(size_t)r].data(), d_targets.data(), s.N, s.Vl,
                                     s.n_real(r), s.start(r), nullptr);
    }
    std::vector<float> dlogits((size_t)s.N * s.Vp()), losses0;
    for (int r = 0; r < s.R; r++) {
      DeviceArray<float> d_losses(s.N);
      float* shard = d_shards[(size_t)r].data();
      cuda::crossentropy_shard_finish(d_losses.data(), shard, shard, d_all_stats.data(), s.R,
                                      d_targets.data(), dloss, s.N, s.Vl, s.n_real(r), s.start(r),
                                      nullptr);
      const auto grad = d_shards[(size_t)r].download();
      for (int n = 0; n < s.N; n++)
        std::copy_n(grad.begin() + (size_t)n * s.Vl, s.Vl,
                    dlogits.begin() + (size_t)n * s.Vp() + s.start(r));
      const auto losses = d_losses.download();
      if (r == 0) losses0 = losses;
      else EXPECT_BITWISE_EQUAL(losses, losses0);
    }
    EXPECT_CLOSE(losses0, want_losses, kTol);
    EXPECT_CLOSE(dlogits, want_dlogits, kTol);
  }
}

}  // namespace
}  // namespace tessera::gpu_test
