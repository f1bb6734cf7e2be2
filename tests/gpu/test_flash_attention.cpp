// Flash attention (kernels/cuda/flash_attention.cu) against the CPU's attention
// (kernels/cpu/attention.cpp) run on the same qkv rounded to bf16 first, so that q, k, v
// are the very values the tensor cores multiply. What remains different is (1) the bf16
// rounding of the other MMA operands, P and dO (and dS in the backward), each a relative
// error of at most 2^-9, and (2) the summation order (fp32 tensor-core sums, the online
// softmax's rescaling, exp2 for exp).
//
// Tolerances. An output element is a sum of many terms, each off by up to 2^-9 of itself,
// so its error scales with the sum of the |terms| (more of them for early keys and late
// queries), not with the (possibly cancelling) sum. So we check
//  - the RMS error over each array relative to the array's RMS: expected about 2^-9
//    (measured 0.001 for out, 0.002 for dq, dk, dv at every T from 37 to 1024), tested at
//    1e-2;
//  - every element relative to |want| + rms(want) (compare()'s floor): the largest grows
//    slowly with T and the element count (0.026 at T = 1024), tested at 0.1.
// A fragment in the wrong register, a mask off by one or a tail row mishandled gives
// errors of order 1 in one or both. lse involves no bf16 rounding past q and k (products
// of two bf16 are exact in fp32), so it is checked against a double-precision
// log-sum-exp of the scaled scores to 1e-4 relative (floor 1). Determinism and the += into
// dqkv are checked to the bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/mixed_precision.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
constexpr double kRmsTol = 1e-2;
constexpr double kMaxTol = 0.1;
constexpr double kLseTol = 1e-4;

using Shape = AttentionShape;

// Shapes: T = 1, a whole tile, odd and tail lengths across the 64-key and 128-query
// tiles, both head sizes, and T = 1024 (B = NH = 1 in the emulator: about 2 s for HS 64,
// 4 s for HS 128; larger batches and GPT-2 small's heads on the GPU).
std::vector<Shape> shapes() {
  std::vector<Shape> s = {{2, 1, 128, 2},  {1, 64, 64, 1},    {2, 37, 256, 2},
                          {2, 100, 128, 2}, {1, 200, 128, 1}, {1, 1024, 64, 1},
                          {1, 1024, 128, 1}};
  if (!small_shapes()) {
    s.push_back({2, 1024, 256, 4});  // HS 64
    s.push_back({2, 1024, 256, 2});  // HS 128
    s.push_back({3, 777, 768, 12});  // GPT-2 small's heads, a ragged T
  }
  return s;
}

// The qkv the GPU multiplies: rounded to bf16 (nearest even) and widened back.
std::vector<float> bf16_rounded(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  kernels::round_to_16bit(kernels::Dtype::bf16, h.data(), x.data(), (int64_t)x.size());
  std::vector<float> y(x.size());
  kernels::widen_16bit(kernels::Dtype::bf16, y.data(), h.data(), (int64_t)x.size());
  return y;
}

// Third `which` (0: q, 1: k, 2: v) of a [B, T, 3C] array, as [B, T, C].
std::vector<float> third(const std::vector<float>& x, const Shape& s, int which) {
  std::vector<float> out((size_t)s.B * s.T * s.C);
  for (int64_t bt = 0; bt < (int64_t)s.B * s.T; bt++)
    std::memcpy(&out[(size_t)(bt * s.C)], &x[(size_t)(bt * 3 * s.C + which * s.C)],
                sizeof(float) * (size_t)s.C);
  return out;
}

// lse[b, h, t] = ln sum over j <= t of exp(q_t . k_j / sqrt(HS)), in double.
std::vector<float> reference_lse(const std::vector<float>& qkv, const Shape& s) {
  const int HS = s.C / s.NH;
  const double scale = 1.0 / std::sqrt((double)HS);
  std::vector<float> lse((size_t)s.B * s.NH * s.T);
  std::vector<double> scores((size_t)s.T);
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.NH; h++)
      for (int t = 0; t < s.T; t++) {
        const float* q = &qkv[((size_t)b * s.T + t) * 3 * s.C + (size_t)h * HS];
        double mx = -INFINITY;
        for (int j = 0; j <= t; j++) {
          const float* k = &qkv[((size_t)b * s.T + j) * 3 * s.C + s.C + (size_t)h * HS];
          double dot = 0;
          for (int d = 0; d < HS; d++) dot += (double)q[d] * k[d];
          scores[(size_t)j] = dot * scale;
          mx = std::max(mx, scores[(size_t)j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; j++) sum += std::exp(scores[(size_t)j] - mx);
        lse[((size_t)b * s.NH + h) * s.T + t] = (float)(mx + std::log(sum));
      }
  return lse;
}

struct Inputs {
  std::vector<float> qkv, dout;
};

// q and k in [-2, 2] make the softmax far from uniform (scores of several units).
Inputs make_inputs(const Shape& s, uint64_t seed) {
  Inputs in;
  in.qkv = random_floats((int64_t)s.B * s.T * 3 * s.C, seed, -2.0f, 2.0f);
  auto v = random_floats((int64_t)s.B * s.T * s.C, seed + 1);
  for (int64_t bt = 0; bt < (int64_t)s.B * s.T; bt++)  // v in [-1, 1]
    std::memcpy(&in.qkv[(size_t)(bt * 3 * s.C + 2 * s.C)], &v[(size_t)(bt * s.C)],
                sizeof(float) * (size_t)s.C);
  in.dout = random_floats((int64_t)s.B * s.T * s.C, seed + 2);
  return in;
}

struct Result {
  std::vector<float> out, lse, dqkv;
};

// The GPU forward and backward on the unrounded qkv (the kernels round it), the backward
// adding into dqkv_start.
Result gpu_run(const Inputs& in, const Shape& s, const std::vector<float>& dqkv_start) {
  auto d_qkv = DeviceArray<float>::from_host(in.qkv), d_dout = DeviceArray<float>::from_host(in.dout);
  auto d_dqkv = DeviceArray<float>::from_host(dqkv_start);
  DeviceArray<float> d_out((int64_t)s.B * s.T * s.C), d_lse((int64_t)s.B * s.NH * s.T);
  // Scratch filled with NaN: the backward must write everything it reads.
  auto d_scratch = DeviceArray<float>::from_host(
      std::vector<float>((size_t)cuda::flash_attention_scratch(s.B, s.T, s.C, s.NH), NAN));
  cuda::flash_attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), s.B, s.T, s.C, s.NH,
                                nullptr);
  cuda::flash_attention_backward(d_dqkv.data(), d_scratch.data(), d_dout.data(), d_qkv.data(),
                                 d_out.data(), d_lse.data(), s.B, s.T, s.C, s.NH, nullptr);
  cuda::check_cuda(cudaDeviceSynchronize(), "flash attention test");
  return {d_out.download(), d_lse.download(), d_dqkv.download()};
}

// The CPU twin on the bf16-rounded qkv; dqkv from zero.
Result cpu_run(const Inputs& in, const Shape& s) {
  const auto qkv = bf16_rounded(in.qkv);
  Result r;
  r.out.resize((size_t)s.B * s.T * s.C);
  std::vector<float> att((size_t)s.B * s.NH * s.T * s.T), scratch(att.size());
  kernels::attention_forward(r.out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  r.dqkv.assign(qkv.size(), 0.0f);
  kernels::attention_backward(r.dqkv.data(), scratch.data(), in.dout.data(), qkv.data(),
                              att.data(), s.B, s.T, s.C, s.NH);
  r.lse = reference_lse(qkv, s);
  return r;
}

// The RMS error relative to rms(want), and every element relative to |want| + rms(want)
// (see the top); the scale is at least `floor`.
void expect_close_to_scale(const std::vector<float>& got, const std::vector<float>& want,
                           const char* what, double floor = 1e-20) {
  ASSERT_EQ(got.size(), want.size());
  const double scale = std::max(rms(want), floor);
  double err2 = 0;
  for (size_t i = 0; i < got.size(); i++) err2 += ((double)got[i] - want[i]) * (got[i] - want[i]);
  EXPECT_LE(std::sqrt(err2 / (double)got.size()) / scale, kRmsTol) << what << ": RMS error";
  const Mismatch m = compare(got, want, scale);
  EXPECT_LE(m.max_error, kMaxTol) << what << ": worst at index " << m.worst_index << ": " << m.got
                                  << " vs " << m.want << " (rms " << scale << ")";
}

TEST(CudaFlashAttention, Supported) {
  REQUIRE_GPU();
  EXPECT_TRUE(cuda::flash_attention_supported(768, 12));   // HS 64
  int device = 0, optin = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
            cudaSuccess);
  // HS 128 needs 132 KiB of shared memory per block: an A100 or H100 has it, an sm_89 not.
  EXPECT_EQ(cuda::flash_attention_supported(1024, 8), optin >= 132 * 1024);
  EXPECT_FALSE(cuda::flash_attention_supported(96, 1));    // HS 96
  EXPECT_FALSE(cuda::flash_attention_supported(768, 24));  // HS 32
  EXPECT_FALSE(cuda::flash_attention_supported(100, 3));   // C not a multiple of NH
  DeviceArray<float> buf(3 * 96);
  EXPECT_THROW(cuda::flash_attention_forward(buf.data(), buf.data(), buf.data(), 1, 1, 96, 1,
                                             nullptr),
               Error);
  // What the kernels cannot take is refused before a launch: qkv off its 16 bytes
  // (cp.async), B * NH past grid.y's 65535.
  EXPECT_THROW(cuda::flash_attention_forward(buf.data(), buf.data(), buf.data() + 1, 1, 1, 64, 1,
                                             nullptr),
               Error);
  EXPECT_THROW(cuda::flash_attention_forward(buf.data(), buf.data(), buf.data(), 65536, 1, 64, 1,
                                             nullptr),
               Error);
}

class CudaFlashAttentionShapes : public testing::TestWithParam<Shape> {};

TEST_P(CudaFlashAttentionShapes, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  const Shape s = GetParam();
  const Inputs in = make_inputs(s, 10);
  const Result got = gpu_run(in, s, std::vector<float>(in.qkv.size(), 0.0f));
  const Result want = cpu_run(in, s);
  expect_close_to_scale(got.out, want.out, "out");
  const Mismatch lse = compare(got.lse, want.lse, 1.0);
  EXPECT_LE(lse.max_error, kLseTol) << "lse: worst at index " << lse.worst_index << ": "
                                    << lse.got << " vs " << lse.want;
  // At T = 1 the CPU's dq and dk are exactly 0, the GPU's the rounding left by dP - Dvec
  // (the same 64 products summed in two orders, ~1e-7 of dv): measured against the
  // gradient's scale, not against 0.
  const double gradient_floor = 1e-3 * rms(want.dqkv);
  const char* names[3] = {"dq", "dk", "dv"};
  for (int which = 0; which < 3; which++)
    expect_close_to_scale(third(got.dqkv, s, which), third(want.dqkv, s, which), names[which],
                          gradient_floor);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaFlashAttentionShapes, testing::ValuesIn(shapes()),
                         [](const testing::TestParamInfo<Shape>& info) {
                           const Shape& s = info.param;
                           return "B" + std::to_string(s.B) + "_T" + std::to_string(s.T) + "_C" +
                                  std::to_string(s.C) + "_NH" + std::to_string(s.NH);
                         });

// The backward adds into dqkv, once per element: start + gradient, up to the one rounding a
// compiler may fuse into the add (an FMA under -march=native in the emulated build). That
// rounding is an ulp of the terms, not of a sum they cancel to, hence to scale.
TEST(CudaFlashAttention, BackwardAccumulatesIntoDqkv) {
  REQUIRE_GPU();
  const Shape s = small_shapes() ? Shape{1, 70, 128, 1} : Shape{2, 1000, 1024, 8};
  const Inputs in = make_inputs(s, 20);
  const Result from_zero = gpu_run(in, s, std::vector<float>(in.qkv.size(), 0.0f));
  const auto start = random_floats((int64_t)in.qkv.size(), 21);
  const Result added = gpu_run(in, s, start);
  std::vector<float> want(start.size());
  for (size_t i = 0; i < want.size(); i++) want[i] = start[i] + from_zero.dqkv[i];
  EXPECT_CLOSE_TO_SCALE(added.dqkv, want, 1e-6);
}

TEST(CudaFlashAttention, Deterministic) {
  REQUIRE_GPU();
  const Shape s = small_shapes() ? Shape{1, 150, 64, 1} : Shape{4, 1024, 768, 12};
  const Inputs in = make_inputs(s, 30);
  const std::vector<float> zero(in.qkv.size(), 0.0f);
  const Result a = gpu_run(in, s, zero), b = gpu_run(in, s, zero);
  EXPECT_BITWISE_EQUAL(a.out, b.out);
  EXPECT_BITWISE_EQUAL(a.lse, b.lse);
  EXPECT_BITWISE_EQUAL(a.dqkv, b.dqkv);
}

}  // namespace
}  // namespace tessera::gpu_test
