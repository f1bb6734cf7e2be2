// The GPU residual add (kernels/cuda/residual.cu) against the CPU twin
// (kernels/cpu/residual.cpp): one float add per element on both, so to the bit.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;

// out[offset..offset+N) = a + b on the GPU and the CPU (offset 1: misaligned, scalar path).
void check_residual(int64_t N, int offset) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " offset=" << offset);
  const auto a = random_floats(N + offset, 1), b = random_floats(N + offset, 2);
  std::vector<float> want(N + offset, 0.0f);
  kernels::residual_forward(want.data() + offset, a.data() + offset, b.data() + offset, N);
  auto d_a = DeviceArray<float>::from_host(a), d_b = DeviceArray<float>::from_host(b);
  DeviceArray<float> d_out(N + offset);
  cuda::residual_forward(d_out.data() + offset, d_a.data() + offset, d_b.data() + offset, N,
                         nullptr);
  const auto got = d_out.download();
  EXPECT_BITWISE_EQUAL(got, want);
}

TEST(CudaResidual, MatchesCpuExactly) {
  REQUIRE_GPU();
  check_residual(1027, 0);  // float4 and a 3-element tail
  check_residual(1024, 0);
  check_residual(2, 0);     // only a tail
  check_residual(1001, 1);  // misaligned
  check_residual(1, 3);
  if (!small_shapes()) check_residual(8 * 1024 * 768 + 3, 0);
}

TEST(CudaResidual, InPlace) {
  REQUIRE_GPU();
  const int64_t N = 1031;
  const auto a = random_floats(N, 3), b = random_floats(N, 4);
  std::vector<float> want(N);
  kernels::residual_forward(want.data(), a.data(), b.data(), N);
  auto d_a = DeviceArray<float>::from_host(a), d_b = DeviceArray<float>::from_host(b);
  cuda::residual_forward(d_a.data(), d_a.data(), d_b.data(), N, nullptr);  // a += b
  const auto got = d_a.download();
  EXPECT_BITWISE_EQUAL(got, want);
}

}  // namespace
}  // namespace tessera::gpu_test
