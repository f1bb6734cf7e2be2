// cuDNN's fused attention (kernels/cuda/cudnn_attention.h) against our own flash attention
// kernel, both through the CUDA backend's Backend methods (the model's calls), on the same
// qkv and output gradient, the backward adding into the same random dqkv.
//
// Tolerances. Both engines round q, k, v to bf16 the same way (nearest even) and multiply
// them exactly in fp32, so what differs is the rounding of the other bf16 operands (P and
// dO, dS in the backward; cuDNN's O and dq, dk, dv as well, each a relative error of at
// most 2^-9) and the summation order. As in test_flash_attention.cpp: the RMS difference of
// each array relative to the array's RMS, expected a few 2^-9, tested at 2e-2; every
// element relative to |want| + rms(want), tested at 0.1; lse (no bf16 rounding past q
// and k) to 1e-3 relative with a floor of 1. A wrong stride, a mask off by one or a
// missing scale gives errors of order 1.
//
// Without a GPU only the descriptors are checked (cuDNN validates every tensor and
// operation descriptor without a device); gpu_emulated_tests has no cuDNN and skips.
#include <cmath>
#include <iostream>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/gpu/gpu_test_support.h"
#ifdef TESSERA_HAVE_CUDNN
#include "kernels/cuda/cudnn_attention.h"
#endif

namespace tessera::gpu_test {
namespace {

namespace k = kernels;
constexpr double kRmsTol = 2e-2;
constexpr double kMaxTol = 0.1;
constexpr double kLseTol = 1e-3;

using Shape = AttentionShape;

// T = 64 and 1024 with head sizes 64 and 128, and GPT-2 small's heads.
const std::vector<Shape> kShapes = {
    {2, 64, 128, 2}, {2, 64, 256, 2}, {2, 1024, 256, 4}, {1, 1024, 256, 2}, {4, 1024, 768, 12}};

#define REQUIRE_CUDNN()                                                               \
  do {                                                                                \
    if (!kHaveCudnn) GTEST_SKIP() << "this binary has no cuDNN (the CUDA emulator, or " \
                                     "a build where CMake found none)";              \
  } while (0)
#ifdef TESSERA_HAVE_CUDNN
constexpr bool kHaveCudnn = true;
#else
constexpr bool kHaveCudnn = false;
#endif

struct Result {
  std::vector<float> out, lse, dqkv;
};

// One engine's forward and backward (cudnn: the cuDNN methods, else our flash kernel) on
// the given inputs, the backward adding into dqkv_start.
Result run(k::Backend& be, bool cudnn, const Shape& s, const std::vector<float>& qkv,
           const std::vector<float>& dout, const std::vector<float>& dqkv_start) {
  const int64_t N = (int64_t)s.B * s.T, rows = (int64_t)s.B * s.NH * s.T;
  auto d_qkv = on_device(be, qkv), d_dout = on_device(be, dout), d_dqkv = on_device(be, dqkv_start);
  auto d_out = be.allocate<float>(N * s.C), d_lse = be.allocate<float>(rows);
  if (cudnn) {
    be.cudnn_attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), s.B, s.T, s.C, s.NH);
    be.cudnn_attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(),
                                d_lse.data(), s.B, s.T, s.C, s.NH);
  } else {
    be.flash_attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), s.B, s.T, s.C, s.NH);
    be.flash_attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(),
                                d_lse.data(), s.B, s.T, s.C, s.NH);
  }
  return {on_host(be, d_out, N * s.C), on_host(be, d_lse, rows), on_host(be, d_dqkv, N * 3 * s.C)};
}

double rms_difference(const std::vector<float>& got, const std::vector<float>& want) {
  std::vector<float> d(got.size());
  for (size_t i = 0; i < d.size(); i++) d[i] = got[i] - want[i];
  return rms(d) / rms(want);
}

TEST(CudnnAttention, DescriptorsAreAcceptedWithoutAGpu) {
  REQUIRE_CUDNN();
#ifdef TESSERA_HAVE_CUDNN
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s);
    EXPECT_EQ("", k::cuda::CudnnAttention::check_descriptors(s.B, s.T, s.C, s.NH));
  }
#endif
}

TEST(CudnnAttention, MatchesOurFlashKernel) {
  REQUIRE_CUDNN();
  REQUIRE_GPU();
  k::Backend& gpu = k::cuda_backend();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s);
    ASSERT_TRUE(gpu.flash_attention_supported(s.C, s.NH));
    ASSERT_EQ("", gpu.cudnn_attention_prepare(s.B, s.T, s.C, s.NH));
    const int64_t N = (int64_t)s.B * s.T;
    const auto qkv = random_floats(N * 3 * s.C, 11, -2.0f, 2.0f);  // scores of several units
    const auto dout = random_floats(N * s.C, 12);
    const auto dqkv_start = random_floats(N * 3 * s.C, 13);
    const Result want = run(gpu, false, s, qkv, dout, dqkv_start);
    const Result got = run(gpu, true, s, qkv, dout, dqkv_start);
    // The gradient alone, so that dqkv_start does not hide its error.
    std::vector<float> got_grad(got.dqkv.size()), want_grad(want.dqkv.size());
    for (size_t i = 0; i < got_grad.size(); i++) {
      got_grad[i] = got.dqkv[i] - dqkv_start[i];
      want_grad[i] = want.dqkv[i] - dqkv_start[i];
    }
    EXPECT_LE(rms_difference(got.out, want.out), kRmsTol);
    EXPECT_LE(rms_difference(got_grad, want_grad), kRmsTol);
    EXPECT_CLOSE_TO_SCALE(got.out, want.out, kMaxTol);
    EXPECT_CLOSE_TO_SCALE(got_grad, want_grad, kMaxTol);
    const auto lse = compare(got.lse, want.lse, 1.0);
    EXPECT_LE(lse.max_error, kLseTol) << "lse worst at " << lse.worst_index << ": " << lse.got
                                      << " vs " << lse.want;
    std::cout << "[cudnn vs flash] " << s << ": rms out " << rms_difference(got.out, want.out)
              << ", rms dqkv " << rms_difference(got_grad, want_grad) << ", lse "
              << lse.max_error << "\n";
  }
}

// Which spelling of the graphs each shape's plans took, and their workspace (printed for
// docs/cuda.md); every shape of the tests must have plans.
TEST(CudnnAttention, ReportsHowEachShapeRuns) {
  REQUIRE_CUDNN();
  REQUIRE_GPU();
#ifdef TESSERA_HAVE_CUDNN
  k::cuda::CudnnAttention cudnn;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << s);
    EXPECT_EQ("", cudnn.prepare(s.B, s.T, s.C, s.NH));
    std::cout << "[cudnn plan] " << s << ": " << cudnn.describe(s.B, s.T, s.C, s.NH) << "\n";
  }
#endif
}

// The two engines share lse's meaning: cuDNN's backward after our forward gives cuDNN's
// gradient (the model may mix them when cuDNN has no graph for one micro-batch size).
TEST(CudnnAttention, BackwardTakesOurForwardsLse) {
  REQUIRE_CUDNN();
  REQUIRE_GPU();
  k::Backend& gpu = k::cuda_backend();
  const Shape s{2, 64, 128, 2};
  ASSERT_EQ("", gpu.cudnn_attention_prepare(s.B, s.T, s.C, s.NH));
  const int64_t N = (int64_t)s.B * s.T;
  const auto qkv = random_floats(N * 3 * s.C, 21, -2.0f, 2.0f), dout = random_floats(N * s.C, 22);
  const std::vector<float> zero((size_t)(N * 3 * s.C), 0.0f);
  const Result cudnn = run(gpu, true, s, qkv, dout, zero);
  auto d_qkv = on_device(gpu, qkv), d_dout = on_device(gpu, dout), d_dqkv = on_device(gpu, zero);
  auto d_out = gpu.allocate<float>(N * s.C), d_lse = gpu.allocate<float>((int64_t)s.B * s.NH * s.T);
  gpu.flash_attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), s.B, s.T, s.C, s.NH);
  gpu.cudnn_attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(),
                               d_lse.data(), s.B, s.T, s.C, s.NH);
  const auto mixed = on_host(gpu, d_dqkv, N * 3 * s.C);
  EXPECT_LE(rms_difference(mixed, cudnn.dqkv), kRmsTol);
}

TEST(CudnnAttention, UnpreparedShapeIsAnError) {
  REQUIRE_CUDNN();
  REQUIRE_GPU();
  k::Backend& gpu = k::cuda_backend();
  auto buf = gpu.allocate<float>(3 * 64 * 3);
  try {
    gpu.cudnn_attention_forward(buf.data(), buf.data(), buf.data(), 1, 3, 64, 1);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("was not prepared"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera::gpu_test
