// The vocabulary-parallel ops through the Backend interface of the CUDA backend
// (kernels/cuda/cuda_backend.cpp): token ids and targets given in host memory, uploaded by
// the backend, the embedding backward's buckets built from the shard's tokens, against
// the CPU backend on the same inputs (to the bit for the embedding and add_bias, to
// kTol = 1e-5 relative for the cross-entropy: expf against vexp, as in test_vocab_shard.cpp).
// On the emulator in gpu_emulated_tests, on the GPU in gpu_tests (each links its backend).
#include <cmath>
#include <vector>

#include "kernels/backend.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace k = kernels;
constexpr double kTol = 1e-5;

// The embedding shard's forward and backward on backend `be`: {out, dwte, dwpe}.
struct EmbeddingResult {
  std::vector<float> out, dwte, dwpe;
};
EmbeddingResult embedding(k::Backend& be, const std::vector<int32_t>& inp, int B, int T, int C,
                          int start, int rows, bool with_wpe) {
  const auto wte = random_floats((int64_t)rows * C, 1), wpe = random_floats((int64_t)T * C, 2);
  const auto dout = random_floats((int64_t)B * T * C, 3);
  auto d_wte = on_device(be, wte), d_wpe = on_device(be, wpe), d_dout = on_device(be, dout);
  auto d_out = be.allocate<float>((int64_t)B * T * C);
  auto d_dwte = on_device(be, random_floats((int64_t)rows * C, 4));
  auto d_dwpe = on_device(be, random_floats((int64_t)T * C, 5));
  be.encoder_forward_vocab_shard(d_out.data(), inp.data(), d_wte.data(),
                                 with_wpe ? d_wpe.data() : nullptr, B, T, C, start, rows);
  be.encoder_backward_vocab_shard(d_dwte.data(), with_wpe ? d_dwpe.data() : nullptr,
                                  d_dout.data(), inp.data(), B, T, C, start, rows);
  return {on_host(be, d_out, (int64_t)B * T * C), on_host(be, d_dwte, (int64_t)rows * C),
          on_host(be, d_dwpe, (int64_t)T * C)};
}

TEST(CudaBackendVocabShard, EmbeddingMatchesTheCpuBackendExactly) {
  REQUIRE_GPU();
  k::Backend& gpu = k::cuda_backend();
  const int B = 2, T = 9, C = 36, V = 40;
  const auto inp = random_tokens((int64_t)B * T, 6, V);
  struct Shard {
    int start, rows;
    bool with_wpe;
  };
  // A middle shard with and without wpe, and one past the batch's tokens (no buckets).
  for (const Shard& s : {Shard{10, 15, true}, Shard{10, 15, false}, Shard{V, 8, true}}) {
    SCOPED_TRACE(testing::Message() << "start=" << s.start << " rows=" << s.rows
                                    << " wpe=" << s.with_wpe);
    const auto got = embedding(gpu, inp, B, T, C, s.start, s.rows, s.with_wpe);
    const auto want = embedding(k::cpu_backend(), inp, B, T, C, s.start, s.rows, s.with_wpe);
    EXPECT_BITWISE_EQUAL(got.out, want.out);
    EXPECT_BITWISE_EQUAL(got.dwte, want.dwte);
    EXPECT_BITWISE_EQUAL(got.dwpe, want.dwpe);
  }
}

TEST(CudaBackendVocabShard, AddBiasMatchesTheCpuBackendExactly) {
  REQUIRE_GPU();
  k::Backend& gpu = k::cuda_backend();
  const int N = 5, OC = 11;
  auto want = random_floats((int64_t)N * OC, 7);
  const auto bias = random_floats(OC, 8);
  auto d_out = on_device(gpu, want), d_bias = on_device(gpu, bias);
  gpu.add_bias(d_out.data(), d_bias.data(), N, OC);
  k::cpu_backend().add_bias(want.data(), bias.data(), N, OC);
  const auto got = on_host(gpu, d_out, (int64_t)N * OC);
  EXPECT_BITWISE_EQUAL(got, want);
}

// Two ranks' stats, gathered, finished (rank 1: 9 real columns of 13, Vl odd), on `be`:
// {losses, rank 1's gradient written over its logits}.
std::pair<std::vector<float>, std::vector<float>> crossentropy(k::Backend& be) {
  const int N = 3, Vl = 13, V = 22, ranks = 2;
  const std::vector<int32_t> targets = {12, 13, 21};  // rank 0's last column, rank 1's first, V-1
  std::vector<float> logits[2] = {random_floats((int64_t)N * Vl, 9, -4, 4),
                                  random_floats((int64_t)N * Vl, 10, -4, 4)};
  for (int n = 0; n < N; n++)
    for (int j = V - Vl; j < Vl; j++) logits[1][(size_t)n * Vl + j] = NAN;  // padding
  auto all_stats = be.allocate<float>((int64_t)ranks * N * 3);
  auto d0 = on_device(be, logits[0]), d1 = on_device(be, logits[1]);
  be.crossentropy_shard_stats(all_stats.data(), d0.data(), targets.data(), N, Vl, Vl, 0);
  be.crossentropy_shard_stats(all_stats.data() + 3 * N, d1.data(), targets.data(), N, Vl, V - Vl,
                              Vl);
  auto losses = be.allocate<float>(N);
  be.crossentropy_shard_finish(losses.data(), d1.data(), d1.data(), all_stats.data(), ranks,
                               targets.data(), 1.0f / N, N, Vl, V - Vl, Vl);
  return {on_host(be, losses, N), on_host(be, d1, (int64_t)N * Vl)};
}

TEST(CudaBackendVocabShard, CrossentropyMatchesTheCpuBackend) {
  REQUIRE_GPU();
  const auto [losses, dlogits] = crossentropy(k::cuda_backend());
  const auto [want_losses, want_dlogits] = crossentropy(k::cpu_backend());
  EXPECT_CLOSE(losses, want_losses, kTol);
  EXPECT_CLOSE(dlogits, want_dlogits, kTol);
}

}  // namespace
}  // namespace tessera::gpu_test
