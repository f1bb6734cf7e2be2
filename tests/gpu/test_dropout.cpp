// The GPU dropout (kernels/cuda/dropout.cu) against the CPU twin (kernels/cpu/dropout.cpp):
// both call kernels/dropout.h's mask function, so the same elements are dropped; the
// forward is one multiply (to the bit), the backward one multiply-add into dinp (which a
// compiler may fuse on either side: one rounding of the terms).
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;

// A mask of a tensor-parallel slice (col0, cols) of a batch that does not start at sample 0.
kernels::DropoutMask slice_mask(int T, int C) {
  kernels::DropoutMask m;
  m.p = 0.3f;
  m.seed = 1234;
  m.first_sample = 3;
  m.T = T;
  m.col0 = C;
  m.cols = 3 * C;
  return m;
}

TEST(CudaDropout, ForwardMatchesCpuToTheBit) {
  REQUIRE_GPU();
  const int T = 13, N = small_shapes() ? 2 * T : 64 * T, C = 97;
  const auto mask = slice_mask(T, C);
  const auto inp = random_floats((int64_t)N * C, 1);
  std::vector<float> want((size_t)N * C);
  kernels::dropout_forward(want.data(), inp.data(), N, C, mask);
  auto d_inp = DeviceArray<float>::from_host(inp);
  DeviceArray<float> d_out((int64_t)N * C);
  cuda::dropout_forward(d_out.data(), d_inp.data(), N, C, mask, nullptr);
  const auto got = d_out.download();
  EXPECT_BITWISE_EQUAL(got, want);
  int64_t dropped = 0;
  for (float v : got) dropped += v == 0.0f;
  const double fraction = (double)dropped / (double)got.size();
  EXPECT_NEAR(fraction, mask.p, 0.08) << "the mask drops about p of the elements";
}

TEST(CudaDropout, BackwardAddsTheMaskedGradient) {
  REQUIRE_GPU();
  const int T = 7, N = small_shapes() ? 3 * T : 64 * T, C = 64;
  const auto mask = slice_mask(T, C);
  const auto dout = random_floats((int64_t)N * C, 2), start = random_floats((int64_t)N * C, 3);
  std::vector<float> want = start;
  kernels::dropout_backward(want.data(), dout.data(), N, C, mask);
  auto d_dout = DeviceArray<float>::from_host(dout), d_dinp = DeviceArray<float>::from_host(start);
  cuda::dropout_backward(d_dinp.data(), d_dout.data(), N, C, mask, nullptr);
  EXPECT_CLOSE_TO_SCALE(d_dinp.download(), want, 1e-6);
}

}  // namespace
}  // namespace tessera::gpu_test
