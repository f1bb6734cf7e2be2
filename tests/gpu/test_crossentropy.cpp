// The GPU fused classifier (kernels/cuda/crossentropy.cu) against the CPU twin
// (kernels/cpu/crossentropy.cpp). The GPU sums the exponentials in another order (online
// softmax per thread, merged in a tree) and calls CUDA's expf for the CPU's vexp (each a
// couple of ulps from exp): tolerance 1e-5 relative (floor 1e-3) on losses and dlogits.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kTol = 1e-5;

enum class Grad { separate, in_place, none };

struct Case {
  int N, V, Vp;
};

// Logits in [-4, 4) with a different offset per row (the max subtraction matters), NaN in
// the padded columns (they must be ignored); targets anywhere in [0, V), both ends included.
std::vector<float> make_logits(const Case& c) {
  auto logits = random_floats((int64_t)c.N * c.Vp, 1, -4.0f, 4.0f);
  for (int n = 0; n < c.N; n++)
    for (int j = 0; j < c.Vp; j++)
      logits[(size_t)n * c.Vp + j] = j < c.V ? logits[(size_t)n * c.Vp + j] + 10.0f * (n % 5) : NAN;
  return logits;
}
std::vector<int32_t> make_targets(const Case& c) {
  auto targets = random_tokens(c.N, 2, c.V);
  targets[0] = 0;
  if (c.N > 1) targets[1] = c.V - 1;
  return targets;
}

void check(const Case& c, Grad grad) {
  SCOPED_TRACE(testing::Message() << "N=" << c.N << " V=" << c.V << " Vp=" << c.Vp
                                  << " grad=" << (int)grad);
  const auto logits = make_logits(c);
  const auto targets = make_targets(c);
  const float dloss = 1.0f / (float)c.N;
  std::vector<float> want_losses(c.N), want_dlogits((size_t)c.N * c.Vp);
  kernels::crossentropy_forward_backward(want_losses.data(),
                                         grad == Grad::none ? nullptr : want_dlogits.data(),
                                         logits.data(), targets.data(), dloss, c.N, c.V, c.Vp);

  auto d_logits = DeviceArray<float>::from_host(logits);
  auto d_targets = DeviceArray<int32_t>::from_host(targets);
  // A separate gradient buffer starts as NaN: every element must be written.
  auto d_dlogits = DeviceArray<float>::from_host(std::vector<float>(logits.size(), NAN));
  DeviceArray<float> d_losses(c.N);
  float* dlogits = grad == Grad::separate  ? d_dlogits.data()
                   : grad == Grad::in_place ? d_logits.data()
                                            : nullptr;
  cuda::crossentropy_forward_backward(d_losses.data(), dlogits, d_logits.data(),
                                      d_targets.data(), dloss, c.N, c.V, c.Vp, nullptr);
  EXPECT_CLOSE(d_losses.download(), want_losses, kTol);
  if (grad == Grad::separate) {
    EXPECT_CLOSE(d_dlogits.download(), want_dlogits, kTol);
    const auto after = d_logits.download();
    EXPECT_BITWISE_EQUAL(after, logits);  // the logits are left alone
  } else if (grad == Grad::in_place) {
    EXPECT_CLOSE(d_logits.download(), want_dlogits, kTol);
  } else {
    const auto after = d_logits.download();
    EXPECT_BITWISE_EQUAL(after, logits);
  }
}

TEST(CudaCrossentropy, MatchesCpuWithPaddedVocabulary) {
  REQUIRE_GPU();
  check({6, 1000, 1024}, Grad::separate);  // float4 columns, then a 24-column padding
  check({5, 1001, 1004}, Grad::separate);  // float4 columns, a 1-column tail, padding
  check({4, 37, 37}, Grad::separate);      // Vp % 4 != 0: one column at a time, no padding
  check({3, 700, 701}, Grad::separate);    // one column at a time, with padding
  if (!small_shapes()) check({1024, 50257, 50304}, Grad::separate);
}

TEST(CudaCrossentropy, InPlaceGradientOverwritesLogits) {
  REQUIRE_GPU();
  check({6, 1000, 1024}, Grad::in_place);
  check({3, 700, 701}, Grad::in_place);
  if (!small_shapes()) check({1024, 50257, 50304}, Grad::in_place);
}

TEST(CudaCrossentropy, LossOnlyWithoutGradient) {
  REQUIRE_GPU();
  check({6, 1000, 1024}, Grad::none);
  check({4, 37, 37}, Grad::none);
}

TEST(CudaCrossentropy, BitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const Case c = small_shapes() ? Case{4, 1000, 1024} : Case{1024, 50257, 50304};
  const auto logits = make_logits(c);
  const auto targets = make_targets(c);
  auto d_logits = DeviceArray<float>::from_host(logits);
  auto d_targets = DeviceArray<int32_t>::from_host(targets);
  std::vector<float> losses[2], dlogits[2];
  for (int run = 0; run < 2; run++) {
    DeviceArray<float> d_losses(c.N), d_dlogits((int64_t)c.N * c.Vp);
    cuda::crossentropy_forward_backward(d_losses.data(), d_dlogits.data(), d_logits.data(),
                                        d_targets.data(), 0.5f, c.N, c.V, c.Vp, nullptr);
    losses[run] = d_losses.download();
    dlogits[run] = d_dlogits.download();
  }
  EXPECT_BITWISE_EQUAL(losses[0], losses[1]);
  EXPECT_BITWISE_EQUAL(dlogits[0], dlogits[1]);
}

}  // namespace
}  // namespace tessera::gpu_test
