// The GPU GELU (kernels/cuda/gelu.cu) against the CPU twin (kernels/cpu/gelu.cpp). Same
// formulas; the GPU calls CUDA's tanhf, the CPU its own vectorised vtanh, and nvcc fuses
// multiply-adds. Both tanh are within an ulp or two of tanh near +-1, which is an ulp of 1
// (6e-8) in absolute terms, and the formulas amplify it where they cancel: 1 + tanh(u) in
// both passes for x below about -2 (the CPU's vtanh even returns exactly -1 for u < -8,
// where tanhf does not), and 1 - tanh^2, multiplied by x * du ~ x^3 / 10, in the backward
// for large |x| (measured 1.2e-6 absolute at x ~ 5). So the tolerance is 1e-5 relative to
// |want| + 1: at most 1e-5 absolute for outputs near 0, far below what a wrong formula or
// index would give.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kTol = 1e-5, kFloor = 1.0;

// EXPECT got == want to kTol relative to |want| + kFloor.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  const Mismatch m = compare(got, want, kFloor);
  EXPECT_LE(m.max_error, kTol) << what << ": worst at index " << m.worst_index << ": " << m.got
                               << " vs " << m.want;
}

// Runs forward and backward on inp[offset..offset+N) (offset 1: misaligned, scalar path).
void check_gelu(int64_t N, int offset, float lo, float hi) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " offset=" << offset);
  const auto x = random_floats(N + offset, 1, lo, hi);
  const auto dout = random_floats(N + offset, 2);
  const auto dinp0 = random_floats(N + offset, 3);  // the backward adds into dinp
  std::vector<float> want_out(N + offset, 0.0f), want_dinp = dinp0;
  kernels::gelu_forward(want_out.data() + offset, x.data() + offset, N);
  kernels::gelu_backward(want_dinp.data() + offset, x.data() + offset, dout.data() + offset, N);

  auto d_x = DeviceArray<float>::from_host(x), d_dout = DeviceArray<float>::from_host(dout),
       d_dinp = DeviceArray<float>::from_host(dinp0);
  DeviceArray<float> d_out(N + offset);
  cuda::gelu_forward(d_out.data() + offset, d_x.data() + offset, N, nullptr);
  cuda::gelu_backward(d_dinp.data() + offset, d_x.data() + offset, d_dout.data() + offset, N,
                      nullptr);
  expect_close(d_out.download(), want_out, "out");
  expect_close(d_dinp.download(), want_dinp, "dinp");
}

TEST(CudaGelu, MatchesCpu) {
  REQUIRE_GPU();
  check_gelu(1027, 0, -3.0f, 3.0f);  // float4 and a 3-element tail
  check_gelu(1024, 0, -3.0f, 3.0f);  // no tail
  check_gelu(3, 0, -3.0f, 3.0f);     // only a tail
  check_gelu(1001, 1, -3.0f, 3.0f);  // misaligned: one element per thread
  check_gelu(4000, 0, -8.0f, 8.0f);  // the saturated tails of tanh
  if (!small_shapes()) check_gelu(8 * 1024 * 3072 + 1, 0, -3.0f, 3.0f);
}

TEST(CudaGelu, BitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const int64_t N = small_shapes() ? 4099 : 8 * 1024 * 3072;
  const auto x = random_floats(N, 4, -3.0f, 3.0f), dout = random_floats(N, 5);
  auto d_x = DeviceArray<float>::from_host(x), d_dout = DeviceArray<float>::from_host(dout);
  std::vector<float> outs[2], dinps[2];
  for (int run = 0; run < 2; run++) {
    DeviceArray<float> d_out(N), d_dinp(N);
    cuda::gelu_forward(d_out.data(), d_x.data(), N, nullptr);
    cuda::gelu_backward(d_dinp.data(), d_x.data(), d_dout.data(), N, nullptr);
    outs[run] = d_out.download();
    dinps[run] = d_dinp.download();
  }
  EXPECT_BITWISE_EQUAL(outs[0], outs[1]);
  EXPECT_BITWISE_EQUAL(dinps[0], dinps[1]);
}

}  // namespace
}  // namespace tessera::gpu_test
