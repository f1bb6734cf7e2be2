// The device seam (kernels/backend.h): the CPU backend gives exactly the bits of the
// kernels of ops.h it forwards to, reads host memory in place, and keeps the attention
// backward's scratch to itself; the new ops (dropout, the strided cast) do what the
// model's loops did; a device without a backend is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/ops.h"

namespace k = tessera::kernels;

namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

// Attention at (B, T, C, NH) through the backend and through ops.h with the caller's
// scratch: the same bits, forward and backward.
void expect_attention_as_ops(int B, int T, int C, int NH, unsigned seed) {
  k::Backend& be = k::cpu_backend();
  const size_t n = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
  const std::vector<float> qkv = random_floats(3 * n, seed), dout = random_floats(n, seed + 1);
  std::vector<float> out(n), att(natt), dqkv(3 * n, 0.0f);
  std::vector<float> out_ops(n), att_ops(natt), dqkv_ops(3 * n, 0.0f), scratch(natt);
  be.attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  be.attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  k::attention_forward(out_ops.data(), att_ops.data(), qkv.data(), B, T, C, NH);
  k::attention_backward(dqkv_ops.data(), scratch.data(), dout.data(), qkv.data(), att_ops.data(),
                        B, T, C, NH);
  EXPECT_TRUE(same_bits(out, out_ops));
  EXPECT_TRUE(same_bits(dqkv, dqkv_ops));
}

}  // namespace

TEST(Backend, CpuIsTheDefaultDevice) {
  EXPECT_EQ(k::cpu_backend().device(), k::Device::cpu);
  EXPECT_TRUE(k::cpu_backend().computes_on_host());
  EXPECT_EQ(&k::backend_for(k::Device::cpu), &k::cpu_backend());
  EXPECT_THROW(k::backend_for(k::Device::cuda), tessera::Error);
}

TEST(Backend, CpuMemoryOperationsAreHostOperations) {
  k::Backend& be = k::cpu_backend();
  k::Buffer<float> buf = be.allocate<float>(8);
  EXPECT_EQ(buf.device(), k::Device::cpu);
  const std::vector<float> src = random_floats(8, 1);
  be.to_device(buf.data(), src.data(), 8);
  std::vector<float> back(8), staging;
  be.to_host(back.data(), buf.data(), 8);
  EXPECT_TRUE(same_bits(src, back));
  EXPECT_EQ(be.host_view(buf.data(), 8, staging), buf.data());  // no copy on the host
  EXPECT_TRUE(staging.empty());
  be.zero(buf.data() + 2, 3);
  for (int i = 0; i < 8; i++) EXPECT_EQ(buf.data()[i], i >= 2 && i < 5 ? 0.0f : src[i]) << i;
}

TEST(Backend, AttentionMatchesOpsWithItsOwnScratch) {
  expect_attention_as_ops(2, 16, 32, 4, 10);
  expect_attention_as_ops(1, 40, 16, 2, 20);  // larger T after smaller: the scratch grows
  expect_attention_as_ops(2, 8, 32, 4, 30);   // and stays valid when smaller is asked
}

// Two threads at once, each with its own shapes: the per-thread scratch keeps them apart.
TEST(Backend, AttentionScratchIsPerThread) {
  std::thread a([] { for (int i = 0; i < 4; i++) expect_attention_as_ops(2, 32, 32, 4, 40 + i); });
  std::thread b([] { for (int i = 0; i < 4; i++) expect_attention_as_ops(3, 24, 16, 2, 50 + i); });
  a.join();
  b.join();
}

TEST(Backend, DropoutMasksAndScalesAsTheMaskSays) {
  const int N = 12, C = 20;
  const k::DropoutMask mask{0.3f, 77, 5, 4, 20, 60};
  const std::vector<float> x = random_floats((size_t)N * C, 3), d = random_floats(x.size(), 4);
  std::vector<float> y(x.size()), dx(x.size(), 1.0f);
  k::cpu_backend().dropout_forward(y.data(), x.data(), N, C, mask);
  k::cpu_backend().dropout_backward(dx.data(), d.data(), N, C, mask);
  int dropped = 0;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      const size_t i = (size_t)n * C + c;
      const float f = k::dropout_factor(mask, n, c);
      EXPECT_TRUE(f == 0.0f || f == 1.0f / (1.0f - mask.p));
      dropped += f == 0.0f;
      EXPECT_EQ(y[i], x[i] * f);
      EXPECT_EQ(dx[i], 1.0f + d[i] * f);
    }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, N * C);
}

TEST(Backend, StridedRoundingIsRowByRowRounding) {
  const int rows = 5, cols = 7, stride = 19;
  const std::vector<float> src = random_floats((size_t)rows * stride, 5);
  for (k::Dtype dt : {k::Dtype::bf16, k::Dtype::fp16}) {
    std::vector<uint16_t> got((size_t)rows * cols), want(got.size());
    k::cpu_backend().round_to_16bit_rows(dt, got.data(), src.data() + 3, rows, cols, stride);
    for (int r = 0; r < rows; r++)
      k::round_to_16bit(dt, want.data() + r * cols, src.data() + 3 + r * stride, cols);
    EXPECT_EQ(got, want) << k::dtype_name(dt);
  }
}
