// Shared by the GPU kernel tests (tests/gpu/test_*.cpp). Each test runs a kernel of
// kernels/cuda/ops.h and its CPU twin of kernels/ops.h on the same random inputs and
// compares the outputs.
//
// The same test sources build twice:
//  - gpu_tests: the kernels compiled by nvcc, on a real GPU; every test skips, saying why,
//    where there is none (REQUIRE_GPU()).
//  - gpu_emulated_tests: the same kernel source run by the CUDA emulator on the CPU
//    (kernels/cuda/emulator), so that CI executes every kernel line without a GPU.
#pragma once
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace tessera::gpu_test {

using kernels::cuda::DeviceArray;

// Why this process cannot run GPU kernels ("" when it can).
std::string why_no_gpu();

// Skips the test (saying why) when there is no GPU; the emulated build never skips.
#define REQUIRE_GPU()                                                   \
  do {                                                                  \
    const std::string why = ::tessera::gpu_test::why_no_gpu();          \
    if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;                \
  } while (0)

// True in gpu_emulated_tests (the emulator runs the CUDA threads one after another on one
// CPU core) and under TESSERA_GPU_TEST_SMALL=1 (compute-sanitizer, which slows a GPU down
// as much): tests then use small shapes instead of GPT-2's.
bool small_shapes();

// n values uniform in [lo, hi), from a fixed seed.
std::vector<float> random_floats(int64_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
// n token ids in [0, vocab).
std::vector<int32_t> random_tokens(int64_t n, uint64_t seed, int vocab);

// The largest |got - want| / (|want| + floor) over the arrays, where the comparison of one
// element fails; `floor` keeps values near 0 from dominating. Sizes must match.
struct Mismatch {
  double max_error = 0;  // the largest relative error
  int64_t worst_index = -1;
  float got = 0, want = 0;
};
Mismatch compare(const std::vector<float>& got, const std::vector<float>& want,
                 double floor = 1e-3);

// EXPECT that every element of got matches want to relative tolerance `tol` (with the
// floor above), and print the worst element otherwise.
#define EXPECT_CLOSE(got_, want_, tol_)                                                   \
  do {                                                                                    \
    const auto m_ = ::tessera::gpu_test::compare((got_), (want_));                        \
    EXPECT_LE(m_.max_error, (tol_)) << #got_ " vs " #want_ ": worst at index "           \
                                    << m_.worst_index << ": " << m_.got << " vs " << m_.want; \
  } while (0)

// sqrt(mean(v^2)) (1 for an empty array): the scale of an array's values.
double rms(const std::vector<float>& v);

// cuda::encoder_backward of the batch whose buckets are given (build_token_buckets), the
// buckets uploaded here; d_dwpe may be null. Synchronous.
void encoder_backward_on_buckets(float* d_dwte, float* d_dwpe, const float* d_dout,
                                 const kernels::cuda::TokenBuckets& buckets, int B, int T, int C);

// EXPECT got close to want relative to max(|want|, rms(want)): for results that are sums
// of many terms which may cancel, where a different summation order moves a near-zero
// result by ulps of its terms, not of itself.
#define EXPECT_CLOSE_TO_SCALE(got_, want_, tol_)                                                 \
  do {                                                                                          \
    const auto m_ = ::tessera::gpu_test::compare((got_), (want_),                               \
                                                 ::tessera::gpu_test::rms(want_));              \
    EXPECT_LE(m_.max_error, (tol_)) << #got_ " vs " #want_ ": worst at index "                 \
                                    << m_.worst_index << ": " << m_.got << " vs " << m_.want;   \
  } while (0)

// Host values to a new buffer on a backend's device, and the first n values back: the
// tests that go through the Backend interface, as the model does.
kernels::Buffer<float> on_device(kernels::Backend& be, const std::vector<float>& host);
std::vector<float> on_host(kernels::Backend& be, const kernels::Buffer<float>& b, int64_t n);

// The attention's shape, for the attention tests' traces.
struct AttentionShape {
  int B, T, C, NH;
};
std::ostream& operator<<(std::ostream& os, const AttentionShape& s);

// EXPECT two arrays identical to the bit (determinism checks).
#define EXPECT_BITWISE_EQUAL(a, b)                                                    \
  do {                                                                                \
    ASSERT_EQ((a).size(), (b).size());                                                \
    EXPECT_EQ(0, std::memcmp((a).data(), (b).data(), (a).size() * sizeof((a)[0])))    \
        << #a " and " #b " differ";                                                   \
  } while (0)

}  // namespace tessera::gpu_test
