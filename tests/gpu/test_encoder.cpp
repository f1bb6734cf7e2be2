// The GPU embedding (kernels/cuda/encoder.cu) against the CPU twin (kernels/cpu/encoder.cpp).
// Both add one float at a time in the same order (the forward a single add; the backward
// the positions of a token, and the batch rows of a position, in ascending order), so
// every comparison here is to the bit: tolerance 0.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;

struct Shape {
  int B, T, C, V;
};

// Runs the GPU backward on the given dwte/dwpe starting values; returns {dwte, dwpe}.
std::pair<std::vector<float>, std::vector<float>> gpu_backward(const std::vector<float>& dwte0,
                                                               const std::vector<float>& dwpe0,
                                                               const std::vector<float>& dout,
                                                               const std::vector<int32_t>& inp,
                                                               const Shape& s) {
  const cuda::TokenBuckets buckets = cuda::build_token_buckets(inp.data(), s.B, s.T);
  auto d_dwte = DeviceArray<float>::from_host(dwte0);
  auto d_dwpe = DeviceArray<float>::from_host(dwpe0);
  auto d_dout = DeviceArray<float>::from_host(dout);
  encoder_backward_on_buckets(d_dwte.data(), d_dwpe.data(), d_dout.data(), buckets, s.B, s.T, s.C);
  return {d_dwte.download(), d_dwpe.download()};
}

void check_forward(const Shape& s) {
  const auto inp = random_tokens((int64_t)s.B * s.T, 1, s.V);
  const auto wte = random_floats((int64_t)s.V * s.C, 2), wpe = random_floats((int64_t)s.T * s.C, 3);
  std::vector<float> want((size_t)s.B * s.T * s.C);
  kernels::encoder_forward(want.data(), inp.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
  auto d_out = DeviceArray<float>((int64_t)want.size());
  auto d_inp = DeviceArray<int32_t>::from_host(inp);
  auto d_wte = DeviceArray<float>::from_host(wte), d_wpe = DeviceArray<float>::from_host(wpe);
  cuda::encoder_forward(d_out.data(), d_inp.data(), d_wte.data(), d_wpe.data(), s.B, s.T, s.C,
                        nullptr);
  const auto got = d_out.download();
  EXPECT_BITWISE_EQUAL(got, want);
}

void check_backward(const Shape& s) {
  // A small vocabulary, so that most tokens appear at several positions.
  const auto inp = random_tokens((int64_t)s.B * s.T, 4, s.V);
  const auto dout = random_floats((int64_t)s.B * s.T * s.C, 5);
  // Nonzero starting gradients: the backward adds into them.
  auto want_dwte = random_floats((int64_t)s.V * s.C, 6);
  auto want_dwpe = random_floats((int64_t)s.T * s.C, 7);
  const auto [dwte, dwpe] = gpu_backward(want_dwte, want_dwpe, dout, inp, s);
  kernels::encoder_backward(want_dwte.data(), want_dwpe.data(), dout.data(), inp.data(), s.B,
                            s.T, s.C);
  EXPECT_BITWISE_EQUAL(dwte, want_dwte);
  EXPECT_BITWISE_EQUAL(dwpe, want_dwpe);
}

TEST(CudaEncoder, BucketsAreSortedByTokenThenPosition) {
  const std::vector<int32_t> inp = {5, 2, 5, 9, 2, 2};  // B=2, T=3
  const auto b = kernels::cuda::build_token_buckets(inp.data(), 2, 3);
  EXPECT_EQ(b.bucket_tokens, (std::vector<int32_t>{2, 5, 9}));
  EXPECT_EQ(b.bucket_start, (std::vector<int32_t>{0, 3, 5, 6}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{1, 4, 5, 0, 2, 3}));
}

TEST(CudaEncoder, ForwardMatchesCpuExactly) {
  REQUIRE_GPU();
  check_forward({3, 17, 64, 50});  // C % 4 == 0: float4 path
  check_forward({2, 9, 37, 20});   // scalar path
  if (!small_shapes()) check_forward({8, 1024, 768, 50257});
}

TEST(CudaEncoder, BackwardMatchesCpuExactly) {
  REQUIRE_GPU();
  check_backward({3, 17, 64, 11});
  check_backward({2, 9, 37, 5});
  check_backward({4, 16, 36, 2});     // two tokens, ~32 positions each
  check_backward({2, 5, 300, 1000});  // C past one block of channels; mostly unique tokens
  if (!small_shapes()) check_backward({8, 1024, 768, 50257});
}

TEST(CudaEncoder, BackwardIsBitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const Shape s = small_shapes() ? Shape{4, 16, 48, 7} : Shape{8, 1024, 768, 500};
  const auto inp = random_tokens((int64_t)s.B * s.T, 8, s.V);
  const auto dout = random_floats((int64_t)s.B * s.T * s.C, 9);
  const std::vector<float> dwte0((size_t)s.V * s.C, 0.0f), dwpe0((size_t)s.T * s.C, 0.0f);
  const auto first = gpu_backward(dwte0, dwpe0, dout, inp, s);
  const auto second = gpu_backward(dwte0, dwpe0, dout, inp, s);
  EXPECT_BITWISE_EQUAL(first.first, second.first);
  EXPECT_BITWISE_EQUAL(first.second, second.second);
}

}  // namespace
}  // namespace tessera::gpu_test
