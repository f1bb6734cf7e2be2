// The GPU casts (kernels/cuda/cast.cu) against the CPU's (kernels/cpu/mixed_precision.h):
// both run the same scalar conversions (kernels/cpu/cast_bf16.h, cast_fp16.h), so every
// result must be identical to the bit, for every special value: zeros, inf, NaN (quiet,
// signalling, with payloads, negative), fp32 denormals, fp16 denormals and underflow,
// ties to even in both types, and values past fp16's largest finite.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
using kernels::Dtype;

float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// The special values, then random values spread over every exponent (sign, exponent and
// mantissa bits drawn separately), n in all.
std::vector<float> cast_inputs(int64_t n) {
  std::vector<float> x = {
      0.0f, -0.0f, 1.0f, -1.0f,
      from_bits(0x7F800000u), from_bits(0xFF800000u),              // +-inf
      from_bits(0x7FC00000u), from_bits(0xFFC00000u),              // quiet NaN, negative
      from_bits(0x7F800001u), from_bits(0x7FA00001u),              // signalling NaN, payloads
      from_bits(0xFF812345u), from_bits(0x7FFFFFFFu),
      from_bits(0x00000001u), from_bits(0x80000001u),              // fp32 denormals
      from_bits(0x007FFFFFu), from_bits(0x00400000u),
      std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
      from_bits(0x7F7F8000u), from_bits(0x7F7F7FFFu),              // around bf16's max: inf / max
      from_bits(0x3F808000u), from_bits(0x3F818000u),              // bf16 ties: to even down, up
      from_bits(0x3F808001u), from_bits(0x3F807FFFu),              // just past / before the tie
      65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e6f, -1e30f,      // fp16's max and overflow
      1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048,                      // fp16 ties: down, up
      1.0f + 1.0f / 2048 + 1.0f / 65536,                           // just past a tie
      6.103515625e-05f, 6.0975552e-05f,                            // 2^-14 and just below
      5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,              // 2^-24, 2^-25 (tie to 0), past
      -4.4703484e-08f, 8.940697e-08f, 1.7881393e-07f * 0.75f,      // fp16 denormal ties
      1e-30f, -1e-40f};
  const CounterRng rng(7, "cast_inputs");
  for (int64_t i = (int64_t)x.size(); i < n; i++) {
    const uint32_t sign = rng.uniform((uint64_t)i * 3) < 0.5f ? 0x80000000u : 0u;
    const uint32_t exponent = (uint32_t)(rng.uniform((uint64_t)i * 3 + 1) * 256.0f) & 0xFFu;
    const uint32_t mantissa = (uint32_t)(rng.uniform((uint64_t)i * 3 + 2) * 8388608.0f) & 0x7FFFFFu;
    x.push_back(from_bits(sign | exponent << 23 | mantissa));
  }
  x.resize((size_t)n);
  return x;
}

// src[offset..offset+n) rounded on the GPU (dt, or bf16 stochastic with seed != 0).
std::vector<uint16_t> gpu_round(const std::vector<float>& src, int offset, Dtype dt,
                                uint64_t seed) {
  const int64_t n = (int64_t)src.size() - offset;
  auto d_src = DeviceArray<float>::from_host(src);
  DeviceArray<uint16_t> d_dst((int64_t)src.size());
  if (seed != 0)
    cuda::round_to_bf16_stochastic(d_dst.data() + offset, d_src.data() + offset, n, seed, 77,
                                   nullptr);
  else
    cuda::round_to_16bit(dt, d_dst.data() + offset, d_src.data() + offset, n, nullptr);
  auto out = d_dst.download();
  return std::vector<uint16_t>(out.begin() + offset, out.end());
}

std::vector<uint16_t> cpu_round(const std::vector<float>& src, int offset, Dtype dt,
                                uint64_t seed) {
  const int64_t n = (int64_t)src.size() - offset;
  std::vector<uint16_t> out((size_t)n);
  if (seed != 0)
    kernels::round_to_bf16_stochastic(out.data(), src.data() + offset, n, seed, 77);
  else
    kernels::round_to_16bit(dt, out.data(), src.data() + offset, n);
  return out;
}

TEST(CudaCast, RoundMatchesCpuToTheBit) {
  REQUIRE_GPU();
  const int64_t n = small_shapes() ? 20'003 : 10'000'003;
  const auto x = cast_inputs(n);
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    for (int offset : {0, 1, 2}) {  // aligned (4 per thread), then one element per thread
      SCOPED_TRACE(testing::Message() << kernels::dtype_name(dt) << " offset " << offset);
      const auto got = gpu_round(x, offset, dt, 0), want = cpu_round(x, offset, dt, 0);
      EXPECT_BITWISE_EQUAL(got, want);
    }
  }
}

TEST(CudaCast, StochasticRoundMatchesCpuToTheBit) {
  REQUIRE_GPU();
  const int64_t n = small_shapes() ? 20'003 : 10'000'003;
  const auto x = cast_inputs(n);
  for (int offset : {0, 1}) {
    SCOPED_TRACE(offset);
    const auto got = gpu_round(x, offset, Dtype::bf16, 42), want = cpu_round(x, offset, Dtype::bf16, 42);
    EXPECT_BITWISE_EQUAL(got, want);
    const auto nearest = cpu_round(x, offset, Dtype::bf16, 0);
    EXPECT_NE(0, std::memcmp(got.data(), nearest.data(), got.size() * 2)) << "not stochastic";
  }
}

TEST(CudaCast, WidenEveryBitPatternMatchesCpu) {
  REQUIRE_GPU();
  std::vector<uint16_t> all(65536 + 3);
  for (size_t i = 0; i < all.size(); i++) all[i] = (uint16_t)i;
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    for (int offset : {0, 1}) {  // aligned; misaligned (one element per thread)
      SCOPED_TRACE(testing::Message() << kernels::dtype_name(dt) << " offset " << offset);
      const int64_t n = (int64_t)all.size() - offset;
      std::vector<float> want((size_t)n);
      kernels::widen_16bit(dt, want.data(), all.data() + offset, n);
      auto d_src = DeviceArray<uint16_t>::from_host(all);
      DeviceArray<float> d_dst((int64_t)all.size());
      cuda::widen_16bit(dt, d_dst.data() + offset, d_src.data() + offset, n, nullptr);
      const auto out = d_dst.download();
      const std::vector<float> got(out.begin() + offset, out.end());
      EXPECT_BITWISE_EQUAL(got, want);
    }
  }
}

// dst += widen(src): the 16-bit attention gradients of cuDNN added into the fp32 dqkv.
// Every bit pattern onto finite fp32 values, against the CPU's widening plus one fp32 add:
// to the bit, except that a NaN sum need only be a NaN (a GPU writes the canonical NaN,
// the CPU keeps the operand's payload).
TEST(CudaCast, AddWidenedEveryBitPatternMatchesCpu) {
  REQUIRE_GPU();
  std::vector<uint16_t> all(65536 + 3);
  std::vector<float> base(all.size());
  for (size_t i = 0; i < all.size(); i++) {
    all[i] = (uint16_t)i;
    base[i] = (float)((int64_t)(i * 7919 % 20011) - 10005) * 0.37f;
  }
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    for (int offset : {0, 1}) {  // aligned; misaligned (one element per thread)
      SCOPED_TRACE(testing::Message() << kernels::dtype_name(dt) << " offset " << offset);
      const int64_t n = (int64_t)all.size() - offset;
      std::vector<float> widened((size_t)n);
      kernels::widen_16bit(dt, widened.data(), all.data() + offset, n);
      auto d_src = DeviceArray<uint16_t>::from_host(all);
      auto d_dst = DeviceArray<float>::from_host(base);
      cuda::add_widened_16bit(dt, d_dst.data() + offset, d_src.data() + offset, n, nullptr);
      const auto got = d_dst.download();
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; i++) {
        const float want = base[offset + i] + widened[i], g = got[offset + i];
        const bool same = std::isnan(want) ? std::isnan(g) : std::memcmp(&g, &want, 4) == 0;
        if (!same && wrong++ < 5) {
          ADD_FAILURE() << "element " << i << ": got " << g << ", want " << want;
        }
      }
      EXPECT_EQ(wrong, 0);
      if (offset) {
        EXPECT_EQ(got[0], base[0]) << "wrote before dst";
      }
    }
  }
}

// A [rows, cols] block out of a wider matrix (the LM head's gradient in column blocks).
TEST(CudaCast, RoundRowsOfAStridedBlockMatchesCpu) {
  REQUIRE_GPU();
  const int64_t rows = small_shapes() ? 37 : 4096, cols = 301, stride = 517;
  const auto x = cast_inputs(rows * stride);
  auto d_src = DeviceArray<float>::from_host(x);
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    SCOPED_TRACE(kernels::dtype_name(dt));
    std::vector<uint16_t> want((size_t)(rows * cols));
    kernels::round_to_16bit_rows(dt, want.data(), x.data() + 5, rows, cols, stride);
    DeviceArray<uint16_t> d_dst(rows * cols);
    cuda::round_to_16bit_rows(dt, d_dst.data(), d_src.data() + 5, rows, cols, stride, nullptr);
    EXPECT_BITWISE_EQUAL(d_dst.download(), want);
  }
}

TEST(CudaCast, RejectsFp32) {
  REQUIRE_GPU();
  DeviceArray<float> f(4);
  DeviceArray<uint16_t> h(4);
  EXPECT_THROW(cuda::round_to_16bit(Dtype::fp32, h.data(), f.data(), 4, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::widen_16bit(Dtype::fp32, f.data(), h.data(), 4, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::add_widened_16bit(Dtype::fp32, f.data(), h.data(), 4, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::round_to_16bit_rows(Dtype::fp32, h.data(), f.data(), 2, 2, 2, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace tessera::gpu_test
