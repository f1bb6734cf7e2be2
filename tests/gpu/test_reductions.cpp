// The GPU reductions (kernels/cuda/reductions.cu) against the CPU twins
// (kernels/cpu/reductions.cpp). sum_squares adds in double on both, in different orders:
// the CPU's one running sum (on one thread) drifts by about 1e-16 sqrt(n) relative, which
// is 6e-14 at n = 3e5 (measured) and 2e-13 at n = 4e6; the GPU's tree of short sums is
// closer to exact. Tested at 1e-12. has_nonfinite is a bit test on both: exact.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/backend.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;

double gpu_sum_squares(const DeviceArray<float>& x, int64_t n) {
  DeviceArray<double> result(1), scratch(cuda::sum_squares_scratch(n));
  cuda::sum_squares(result.data(), scratch.data(), x.data(), n, nullptr);
  return result.download()[0];
}

// The backend's batched form (a global norm's one wait for the device) gives each span's
// sum exactly as one call per span does, spans of different sizes sharing the scratch.
TEST(CudaSumSquares, BackendBatchMatchesOneSpanAtATime) {
  REQUIRE_GPU();
  kernels::Backend& gpu = kernels::cuda_backend();
  const int64_t n = small_shapes() ? 100'000 : 1'000'000;
  auto x = on_device(gpu, random_floats(n, 3, -2.0f, 2.0f));
  const std::vector<std::pair<const float*, int64_t>> spans = {
      {x.data(), n}, {x.data() + 7, 1}, {x.data() + 100, 5000}, {x.data() + 9, 0},
      {x.data() + 64, n - 64}};
  const std::vector<double> got = gpu.sum_squares_each(spans);
  ASSERT_EQ(got.size(), spans.size());
  for (size_t i = 0; i < spans.size(); i++)
    EXPECT_EQ(got[i], gpu.sum_squares(spans[i].first, spans[i].second)) << "span " << i;
  EXPECT_TRUE(gpu.sum_squares_each({}).empty());
}

TEST(CudaSumSquares, MatchesCpu) {
  REQUIRE_GPU();
  // One block; a partial block; 274 partials (the final kernel's threads loop); more
  // elements than the 1024 x 256 threads of the largest grid (each thread loops); none.
  std::vector<int64_t> sizes = {1, 200, 70001, 0};
  sizes.push_back(small_shapes() ? 300'001 : 4'000'037);
  for (int64_t n : sizes) {
    SCOPED_TRACE(n);
    const auto x = random_floats(std::max<int64_t>(n, 1), 1, -3.0f, 3.0f);  // no empty array
    const double want = kernels::sum_squares(x.data(), n);
    const double got = gpu_sum_squares(DeviceArray<float>::from_host(x), n);
    EXPECT_LE(std::fabs(got - want), 1e-12 * std::fabs(want)) << got << " vs " << want;
  }
}

TEST(CudaSumSquares, BitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const int64_t n = small_shapes() ? 300'001 : 50'000'017;
  const auto d_x = DeviceArray<float>::from_host(random_floats(n, 2, -100.0f, 100.0f));
  const double first = gpu_sum_squares(d_x, n), second = gpu_sum_squares(d_x, n);
  EXPECT_EQ(0, std::memcmp(&first, &second, sizeof(double)));
}

// has_nonfinite on x with `bad` written at `index` (index < 0: none).
bool gpu_has_nonfinite(int64_t n, int64_t index, float bad) {
  auto x = random_floats(std::max<int64_t>(n, 1), 3, -1e30f, 1e30f);  // no empty array
  if (index >= 0) x[(size_t)index] = bad;
  EXPECT_EQ(index >= 0 && !std::isfinite(bad), kernels::has_nonfinite(x.data(), n));
  DeviceArray<int32_t> result(1);  // zeroed
  cuda::has_nonfinite(result.data(), DeviceArray<float>::from_host(x).data(), n, nullptr);
  const int32_t r = result.download()[0];
  EXPECT_TRUE(r == 0 || r == 1) << r;
  return r == 1;
}

TEST(CudaHasNonfinite, FindsInfAndNanAnywhere) {
  REQUIRE_GPU();
  const int64_t n = small_shapes() ? 300'001 : 10'000'019;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float bad : {inf, -inf, nan, -nan}) {
    for (int64_t index : {int64_t{0}, n / 2, n - 1}) {
      SCOPED_TRACE(testing::Message() << bad << " at " << index);
      EXPECT_TRUE(gpu_has_nonfinite(n, index, bad));
    }
  }
  EXPECT_TRUE(gpu_has_nonfinite(5, 4, nan));
}

TEST(CudaHasNonfinite, LeavesResultAloneWhenAllFinite) {
  REQUIRE_GPU();
  const int64_t n = small_shapes() ? 300'001 : 10'000'019;
  EXPECT_FALSE(gpu_has_nonfinite(n, -1, 0.0f));
  // The largest finite float and a denormal are finite.
  EXPECT_FALSE(gpu_has_nonfinite(n, n - 1, std::numeric_limits<float>::max()));
  EXPECT_FALSE(gpu_has_nonfinite(n, 0, std::numeric_limits<float>::denorm_min()));
  EXPECT_FALSE(gpu_has_nonfinite(0, -1, 0.0f));
}

}  // namespace
}  // namespace tessera::gpu_test
