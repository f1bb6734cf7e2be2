// The GPU AdamW (kernels/cuda/adamw.cu) against the CPU twin (kernels/cpu/adamw.cpp): the
// same expression on the same host-computed scalars, but nvcc fuses the multiply-adds of
// the moments (the CPU build may not), which moves params, m and v by an ulp or so:
// tolerance 1e-6 relative (floor 1e-3). The 16-bit copy is checked to the bit against
// the CPU's rounding of the GPU's own new parameters, so an ulp of difference in a
// parameter cannot hide or fake a rounding bug.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
using kernels::Dtype;
constexpr double kTol = 1e-6;

struct State {
  std::vector<float> params, m, v;
};

State initial_state(int64_t n) {
  auto v = random_floats(n, 3, 0.0f, 1e-3f);  // second moments are not negative
  return {random_floats(n, 1), random_floats(n, 2, -1e-2f, 1e-2f), v};
}

// Two steps (t = 1, then t = 7) on the GPU with the given copy; returns the state and copy.
std::pair<State, std::vector<uint16_t>> gpu_steps(const State& start,
                                                  const std::vector<float>& grads, Dtype dt,
                                                  bool with_copy, uint64_t seed,
                                                  uint64_t offset) {
  const int64_t n = (int64_t)grads.size();
  auto d_p = DeviceArray<float>::from_host(start.params), d_m = DeviceArray<float>::from_host(start.m),
       d_v = DeviceArray<float>::from_host(start.v), d_g = DeviceArray<float>::from_host(grads);
  DeviceArray<uint16_t> d_copy(n);
  for (int64_t t : {1, 7})
    cuda::adamw_update(d_p.data(), d_g.data(), d_m.data(), d_v.data(), n, 1e-3f, 0.9f, 0.95f,
                       1e-8f, 0.1f, t, 0.5f, with_copy ? d_copy.data() : nullptr, dt, seed, offset,
                       nullptr);
  return {{d_p.download(), d_m.download(), d_v.download()}, d_copy.download()};
}

State cpu_steps(State s, const std::vector<float>& grads) {
  for (int64_t t : {1, 7})
    kernels::adamw_update(s.params.data(), grads.data(), s.m.data(), s.v.data(),
                          (int64_t)grads.size(), 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.5f);
  return s;
}

int64_t test_size() { return small_shapes() ? 1003 : 10'000'003; }

void expect_state_close(const State& got, const State& want) {
  EXPECT_CLOSE(got.params, want.params, kTol);
  EXPECT_CLOSE(got.m, want.m, kTol);
  EXPECT_CLOSE(got.v, want.v, kTol);
}

TEST(CudaAdamw, MatchesCpu) {
  REQUIRE_GPU();
  const int64_t n = test_size();
  const State start = initial_state(n);
  const auto grads = random_floats(n, 4);
  const auto [got, copy] = gpu_steps(start, grads, Dtype::fp32, false, 0, 0);
  expect_state_close(got, cpu_steps(start, grads));
}

TEST(CudaAdamw, CopyRoundsToNearestEven) {
  REQUIRE_GPU();
  const int64_t n = test_size();
  const State start = initial_state(n);
  const auto grads = random_floats(n, 5);
  const State want = cpu_steps(start, grads);
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    SCOPED_TRACE(kernels::dtype_name(dt));
    const auto [got, copy] = gpu_steps(start, grads, dt, true, 0, 0);
    expect_state_close(got, want);
    std::vector<uint16_t> rounded((size_t)n);
    kernels::round_to_16bit(dt, rounded.data(), got.params.data(), n);
    EXPECT_BITWISE_EQUAL(copy, rounded);
  }
}

TEST(CudaAdamw, StochasticCopyMatchesCpuRounding) {
  REQUIRE_GPU();
  const int64_t n = test_size();
  const State start = initial_state(n);
  const auto grads = random_floats(n, 6);
  const uint64_t seed = 1234, offset = 5000;  // a shard that starts at element 5000
  const auto [got, copy] = gpu_steps(start, grads, Dtype::bf16, true, seed, offset);
  expect_state_close(got, cpu_steps(start, grads));
  std::vector<uint16_t> rounded((size_t)n), nearest((size_t)n);
  kernels::round_to_bf16_stochastic(rounded.data(), got.params.data(), n, seed, offset);
  EXPECT_BITWISE_EQUAL(copy, rounded);
  // And it is not round-to-nearest in disguise.
  kernels::round_to_16bit(Dtype::bf16, nearest.data(), got.params.data(), n);
  EXPECT_NE(0, std::memcmp(copy.data(), nearest.data(), copy.size() * sizeof(uint16_t)));
}

TEST(CudaAdamw, BitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const int64_t n = test_size();
  const State start = initial_state(n);
  const auto grads = random_floats(n, 7);
  const auto first = gpu_steps(start, grads, Dtype::bf16, true, 99, 0);
  const auto second = gpu_steps(start, grads, Dtype::bf16, true, 99, 0);
  EXPECT_BITWISE_EQUAL(first.first.params, second.first.params);
  EXPECT_BITWISE_EQUAL(first.first.m, second.first.m);
  EXPECT_BITWISE_EQUAL(first.first.v, second.first.v);
  EXPECT_BITWISE_EQUAL(first.second, second.second);
}

TEST(CudaAdamw, RejectsImpossibleCopies) {
  REQUIRE_GPU();
  DeviceArray<float> p(4), g(4), m(4), v(4);
  DeviceArray<uint16_t> copy(4);
  EXPECT_THROW(cuda::adamw_update(p.data(), g.data(), m.data(), v.data(), 4, 1e-3f, 0.9f, 0.95f,
                                  1e-8f, 0.0f, 1, 1.0f, copy.data(), Dtype::fp32, 0, 0, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::adamw_update(p.data(), g.data(), m.data(), v.data(), 4, 1e-3f, 0.9f, 0.95f,
                                  1e-8f, 0.0f, 1, 1.0f, copy.data(), Dtype::fp16, 7, 0, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace tessera::gpu_test
