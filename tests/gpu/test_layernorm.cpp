// The GPU LayerNorm (kernels/cuda/layernorm.cu) against the CPU twin
// (kernels/cpu/layernorm.cpp). The formulas are the same; the sums over a row (forward,
// dinp) and over the rows (dweight, dbias) are added in a different order (warp trees,
// per-block partials), and nvcc fuses multiply-adds, so results differ in the last bits.
// Tolerances:
//  - mean and rstd: 1e-5 relative (floor 1e-3), about 100 float ulps.
//  - out, dinp, dweight, dbias: 1e-5 relative to |want| + 1. These are sums of O(1) terms
//    (normalized activations, weights near 1, dout in [-1, 1]) that often cancel to near
//    0: the mean's last bit, summed in another order, moves every x - mean by ~1e-7, which
//    is a large relative error on an output of 1e-3 but not a bug (measured: < 1e-6).
// A near-constant row, whose variance (~3e-7) is far below eps, checks eps: a wrong eps
// moves its rstd by far more than 1e-5.
#include <cstring>
#include <vector>

#include "base/error.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kTol = 1e-5;

// EXPECT got == want to kTol relative to |want| + 1 (see the top of the file).
void expect_close_o1(const std::vector<float>& got, const std::vector<float>& want,
                     const char* what) {
  const Mismatch m = compare(got, want, 1.0);
  EXPECT_LE(m.max_error, kTol) << what << ": worst at index " << m.worst_index << ": " << m.got
                               << " vs " << m.want;
}

struct Forward {
  std::vector<float> out, mean, rstd;
};

Forward gpu_forward(const std::vector<float>& inp, const std::vector<float>& w,
                    const std::vector<float>& b, int N, int C) {
  auto d_inp = DeviceArray<float>::from_host(inp), d_w = DeviceArray<float>::from_host(w),
       d_b = DeviceArray<float>::from_host(b);
  DeviceArray<float> d_out((int64_t)N * C), d_mean(N), d_rstd(N);
  cuda::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_inp.data(), d_w.data(),
                          d_b.data(), N, C, nullptr);
  return {d_out.download(), d_mean.download(), d_rstd.download()};
}

Forward cpu_forward(const std::vector<float>& inp, const std::vector<float>& w,
                    const std::vector<float>& b, int N, int C) {
  Forward f{std::vector<float>((size_t)N * C), std::vector<float>(N), std::vector<float>(N)};
  kernels::layernorm_forward(f.out.data(), f.mean.data(), f.rstd.data(), inp.data(), w.data(),
                             b.data(), N, C);
  return f;
}

// Inputs with a row offset, so that the mean matters (and a two-pass variance does too);
// the last row is 0.01 + noise of 1e-3 (variance ~3e-7, far below eps; a larger offset
// would leave the noise only a few float ulps of the offset).
std::vector<float> layernorm_input(int N, int C, uint64_t seed) {
  auto x = random_floats((int64_t)N * C, seed, -2.0f, 2.0f);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      float& v = x[(size_t)n * C + c];
      v = n == N - 1 ? 0.01f + 1e-3f * v : v + 0.5f * (float)(n % 7);
    }
  return x;
}

void check_forward(int N, int C) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C);
  const auto inp = layernorm_input(N, C, 1);
  const auto w = random_floats(C, 2, 0.5f, 1.5f), b = random_floats(C, 3);
  const Forward got = gpu_forward(inp, w, b, N, C), want = cpu_forward(inp, w, b, N, C);
  expect_close_o1(got.out, want.out, "out");
  EXPECT_CLOSE(got.mean, want.mean, kTol);
  EXPECT_CLOSE(got.rstd, want.rstd, kTol);
}

struct Backward {
  std::vector<float> dinp, dweight, dbias;
};

// The GPU backward from the given starting gradients (dweight/dbias empty: frozen).
Backward gpu_backward(Backward start, const std::vector<float>& dout,
                      const std::vector<float>& inp, const std::vector<float>& w,
                      const Forward& f, int N, int C) {
  auto d_dinp = DeviceArray<float>::from_host(start.dinp);
  const bool frozen = start.dweight.empty();
  auto d_dw = DeviceArray<float>::from_host(frozen ? std::vector<float>(1) : start.dweight);
  auto d_db = DeviceArray<float>::from_host(frozen ? std::vector<float>(1) : start.dbias);
  // Scratch filled with NaN: the kernels must write every partial they read.
  auto d_scratch = DeviceArray<float>::from_host(
      std::vector<float>((size_t)cuda::layernorm_backward_scratch(N, C), NAN));
  auto d_dout = DeviceArray<float>::from_host(dout), d_inp = DeviceArray<float>::from_host(inp),
       d_w = DeviceArray<float>::from_host(w), d_mean = DeviceArray<float>::from_host(f.mean),
       d_rstd = DeviceArray<float>::from_host(f.rstd);
  cuda::layernorm_backward(d_dinp.data(), frozen ? nullptr : d_dw.data(),
                           frozen ? nullptr : d_db.data(), frozen ? nullptr : d_scratch.data(),
                           d_dout.data(), d_inp.data(), d_w.data(), d_mean.data(), d_rstd.data(),
                           N, C, nullptr);
  if (frozen) return {d_dinp.download(), {}, {}};
  return {d_dinp.download(), d_dw.download(), d_db.download()};
}

void check_backward(int N, int C, bool frozen) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C << " frozen=" << frozen);
  const auto inp = layernorm_input(N, C, 4);
  const auto w = random_floats(C, 5, 0.5f, 1.5f), b = random_floats(C, 6);
  const auto dout = random_floats((int64_t)N * C, 7);
  const Forward f = cpu_forward(inp, w, b, N, C);
  // Nonzero starting gradients: the backward adds into them.
  Backward want{random_floats((int64_t)N * C, 8), random_floats(C, 9), random_floats(C, 10)};
  if (frozen) want.dweight.clear(), want.dbias.clear();
  const Backward got = gpu_backward(want, dout, inp, w, f, N, C);
  kernels::layernorm_backward(want.dinp.data(), frozen ? nullptr : want.dweight.data(),
                              frozen ? nullptr : want.dbias.data(), dout.data(), inp.data(),
                              w.data(), f.mean.data(), f.rstd.data(), N, C);
  expect_close_o1(got.dinp, want.dinp, "dinp");
  expect_close_o1(got.dweight, want.dweight, "dweight");
  expect_close_o1(got.dbias, want.dbias, "dbias");
}

TEST(CudaLayernorm, ForwardMatchesCpu) {
  REQUIRE_GPU();
  check_forward(37, 96);  // rows not a multiple of the 8 per block
  check_forward(5, 130);  // C not a multiple of 32
  check_forward(3, 7);    // C below a warp
  if (!small_shapes()) check_forward(8192, 768);
}

TEST(CudaLayernorm, ResidualForwardAddsThenNormalizes) {
  REQUIRE_GPU();
  const int N = small_shapes() ? 21 : 8192, C = small_shapes() ? 100 : 768;
  const auto a = layernorm_input(N, C, 11), bb = random_floats((int64_t)N * C, 12);
  const auto w = random_floats(C, 13, 0.5f, 1.5f), bias = random_floats(C, 14);
  auto d_a = DeviceArray<float>::from_host(a), d_b = DeviceArray<float>::from_host(bb),
       d_w = DeviceArray<float>::from_host(w), d_bias = DeviceArray<float>::from_host(bias);
  DeviceArray<float> d_res((int64_t)N * C), d_out((int64_t)N * C), d_mean(N), d_rstd(N);
  cuda::residual_layernorm_forward(d_res.data(), d_out.data(), d_mean.data(), d_rstd.data(),
                                   d_a.data(), d_b.data(), d_w.data(), d_bias.data(), N, C,
                                   nullptr);
  std::vector<float> residual((size_t)N * C);
  kernels::residual_forward(residual.data(), a.data(), bb.data(), (int64_t)N * C);
  const auto got_residual = d_res.download();
  EXPECT_BITWISE_EQUAL(got_residual, residual);  // one float add, as the CPU
  const Forward want = cpu_forward(residual, w, bias, N, C);
  expect_close_o1(d_out.download(), want.out, "out");
  EXPECT_CLOSE(d_mean.download(), want.mean, kTol);
  EXPECT_CLOSE(d_rstd.download(), want.rstd, kTol);
}

TEST(CudaLayernorm, BackwardMatchesCpu) {
  REQUIRE_GPU();
  check_backward(37, 96, false);  // two partial row groups, the last one short
  check_backward(70, 300, false);  // three row groups; C past one block of columns
  check_backward(3, 7, false);
  check_backward(300, 40, false);  // 10 row groups: more than the reduce kernel's 8 adders
  if (!small_shapes()) check_backward(8192, 768, false);
}

TEST(CudaLayernorm, FrozenBackwardComputesOnlyDinp) {
  REQUIRE_GPU();
  check_backward(37, 96, true);
}

TEST(CudaLayernorm, BackwardWantsBothParameterGradientsOrNeither) {
  REQUIRE_GPU();
  DeviceArray<float> buf(64);
  float* p = buf.data();
  EXPECT_THROW(cuda::layernorm_backward(p, p, nullptr, p, p, p, p, p, p, 1, 8, nullptr), Error);
  EXPECT_THROW(cuda::layernorm_backward(p, nullptr, p, p, p, p, p, p, p, 1, 8, nullptr), Error);
}

TEST(CudaLayernorm, BackwardIsBitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const int N = small_shapes() ? 70 : 8192, C = small_shapes() ? 64 : 768;
  const auto inp = layernorm_input(N, C, 15);
  const auto w = random_floats(C, 16, 0.5f, 1.5f), b = random_floats(C, 17);
  const auto dout = random_floats((int64_t)N * C, 18);
  const Forward f = cpu_forward(inp, w, b, N, C);
  const Backward zero{std::vector<float>((size_t)N * C), std::vector<float>(C),
                      std::vector<float>(C)};
  const Backward first = gpu_backward(zero, dout, inp, w, f, N, C);
  const Backward second = gpu_backward(zero, dout, inp, w, f, N, C);
  EXPECT_BITWISE_EQUAL(first.dinp, second.dinp);
  EXPECT_BITWISE_EQUAL(first.dweight, second.dweight);
  EXPECT_BITWISE_EQUAL(first.dbias, second.dbias);
}

}  // namespace
}  // namespace tessera::gpu_test
