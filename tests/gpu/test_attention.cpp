// The GPU attention (kernels/cuda/attention.cu: batched cuBLASLt GEMMs and our causal
// softmax) against the CPU twin (kernels/cpu/attention.cpp): out, the probabilities att,
// and the gradient of all of qkv (q, k and v), at T = 1, an odd T, 64 and 1024.
//
// Tolerance 1e-5 relative, with values below the tensor's rms counted as its rms (the
// products and row sums are added in another order than the CPU's, which moves a
// near-zero result by ulps of its terms, not of itself): about 100 float ulps, while a
// wrong mask, scale, head or transpose is off by O(1). The probabilities are compared
// with the plain 1e-3 floor (entries above the diagonal must be exactly 0: they are).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kTol = 1e-5;

struct Shape {
  int B, T, C, NH;
  int64_t btc() const { return (int64_t)B * T * C; }
  int64_t att() const { return (int64_t)B * NH * T * T; }
};

struct Forward {
  std::vector<float> out, att;
};

// Scratch and outputs start as NaN: nothing may be read before it is written.
Forward gpu_forward(const Shape& s, const std::vector<float>& qkv) {
  auto d_qkv = DeviceArray<float>::from_host(qkv);
  auto d_out = DeviceArray<float>::from_host(std::vector<float>((size_t)s.btc(), NAN));
  auto d_att = DeviceArray<float>::from_host(std::vector<float>((size_t)s.att(), NAN));
  auto d_scratch = DeviceArray<float>::from_host(
      std::vector<float>((size_t)cuda::attention_scratch(s.B, s.T, s.C, s.NH), NAN));
  cuda::attention_forward(d_out.data(), d_att.data(), d_scratch.data(), d_qkv.data(), s.B, s.T,
                          s.C, s.NH, nullptr);
  return {d_out.download(), d_att.download()};
}

Forward cpu_forward(const Shape& s, const std::vector<float>& qkv) {
  Forward f{std::vector<float>((size_t)s.btc()), std::vector<float>((size_t)s.att())};
  kernels::attention_forward(f.out.data(), f.att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  return f;
}

std::vector<float> gpu_backward(const Shape& s, std::vector<float> dqkv,
                                const std::vector<float>& dout, const std::vector<float>& qkv,
                                const std::vector<float>& att) {
  auto d_dqkv = DeviceArray<float>::from_host(dqkv), d_dout = DeviceArray<float>::from_host(dout),
       d_qkv = DeviceArray<float>::from_host(qkv), d_att = DeviceArray<float>::from_host(att);
  auto d_scratch = DeviceArray<float>::from_host(
      std::vector<float>((size_t)cuda::attention_scratch(s.B, s.T, s.C, s.NH), NAN));
  cuda::attention_backward(d_dqkv.data(), d_scratch.data(), d_dout.data(), d_qkv.data(),
                           d_att.data(), s.B, s.T, s.C, s.NH, nullptr);
  return d_dqkv.download();
}

// Forward and backward against the CPU; qkv in [-2, 2] so that the softmax is peaked
// enough to matter.
void check(const Shape& s) {
  SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH);
  const auto qkv = random_floats(3 * s.btc(), 700 + s.T, -2.0f, 2.0f);
  const Forward got = gpu_forward(s, qkv), want = cpu_forward(s, qkv);
  EXPECT_CLOSE_TO_SCALE(got.out, want.out, kTol);
  EXPECT_CLOSE(got.att, want.att, kTol);
  for (int64_t bh = 0; bh < (int64_t)s.B * s.NH; bh++)  // the causal mask: exact zeros
    for (int i = 0; i < s.T; i++)
      for (int j = i + 1; j < s.T; j++)
        ASSERT_EQ(got.att[(size_t)((bh * s.T + i) * s.T + j)], 0.0f) << "above the diagonal";

  const auto dout = random_floats(s.btc(), 800 + s.T);
  const auto start = random_floats(3 * s.btc(), 900 + s.T);  // the backward adds into dqkv
  const auto got_dqkv = gpu_backward(s, start, dout, qkv, want.att);
  auto want_dqkv = start;
  std::vector<float> scratch((size_t)s.att());
  kernels::attention_backward(want_dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                              want.att.data(), s.B, s.T, s.C, s.NH);
  // q, k and v's gradients each (their scales differ)
  for (int part = 0; part < 3; part++) {
    SCOPED_TRACE(testing::Message() << "d" << "qkv"[part]);
    std::vector<float> g, w;
    for (int64_t bt = 0; bt < (int64_t)s.B * s.T; bt++)
      for (int c = 0; c < s.C; c++) {
        const size_t i = (size_t)(bt * 3 * s.C + part * s.C + c);
        g.push_back(got_dqkv[i]);
        w.push_back(want_dqkv[i]);
      }
    EXPECT_CLOSE_TO_SCALE(g, w, kTol);
  }
}

TEST(CudaAttention, MatchesCpuAtT1) {
  REQUIRE_GPU();
  check({2, 1, 48, 3});
}

TEST(CudaAttention, MatchesCpuAtOddT) {
  REQUIRE_GPU();
  check({2, 37, 48, 3});  // rows past a warp's 32 columns, not a multiple of anything
  check({1, 37, 45, 3});  // HS = 15: the head copies one float at a time
}

TEST(CudaAttention, MatchesCpuAtT64) {
  REQUIRE_GPU();
  check({2, 64, 64, 4});
  if (!small_shapes()) check({4, 64, 768, 12});  // GPT-2 small's heads (HS 64)
}

TEST(CudaAttention, MatchesCpuAtT1024) {
  REQUIRE_GPU();
  check(small_shapes() ? Shape{2, 1024, 32, 2} : Shape{2, 1024, 256, 4});
}

TEST(CudaAttention, BackwardIsBitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const Shape s = small_shapes() ? Shape{2, 40, 32, 2} : Shape{4, 1024, 768, 12};
  const auto qkv = random_floats(3 * s.btc(), 1000, -2.0f, 2.0f);
  const auto dout = random_floats(s.btc(), 1001);
  const Forward f = gpu_forward(s, qkv);
  const auto zero = std::vector<float>((size_t)(3 * s.btc()));
  const auto first = gpu_backward(s, zero, dout, qkv, f.att);
  const auto second = gpu_backward(s, zero, dout, qkv, f.att);
  EXPECT_BITWISE_EQUAL(first, second);
  const Forward again = gpu_forward(s, qkv);
  EXPECT_BITWISE_EQUAL(f.out, again.out);
  EXPECT_BITWISE_EQUAL(f.att, again.att);
}

}  // namespace
}  // namespace tessera::gpu_test
