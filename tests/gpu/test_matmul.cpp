// The GPU linear layers and GEMMs (kernels/cuda/matmul.cu, on cuBLASLt) against the CPU
// twins: kernels/ops.h's matmul_forward / matmul_backward (and their 16-bit forms, and
// gelu_forward for the fused epilogue), kernels/cpu/gemm.h's sgemm for gemm and
// gemm_batched. A CudaCublasLt test also pins down the meaning of a raw cublasLtMatmul
// call, so that on a GPU it checks the emulator's cuBLASLt against the real one.
//
// Tolerances. A GEMM output is a K-term dot product summed in another order than the
// CPU's (cuBLASLt's tiles, split-K), so it differs by a few ulps of the terms' magnitude,
// not of the (possibly cancelled, near-zero) result: errors are measured relative to
// max(|want|, rms(want)). fp32 (CUBLAS_COMPUTE_32F, no TF32): 1e-5, about 100 ulps, far
// below what a wrong element, transpose or stride gives (O(1)). 16-bit: both sides take
// the same rounded operands and their products are exact in fp32, so only the
// accumulation differs, but tensor cores may add with less care than FMAs: 1e-4. The
// fused GELU: 1e-5 in the emulator (libm's tanhf against the CPU's); on a GPU 1e-4,
// which a GELU epilogue computed with erf (4e-4 away) or a coarse tanh would fail (then
// set matmul.cu's kFuseGeluEpilogue to false).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/mixed_precision.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_support.h"

namespace tessera::gpu_test {
namespace {

namespace cuda = kernels::cuda;
using kernels::Dtype;
constexpr double kTol = 1e-5, kTol16 = 1e-4;

std::vector<uint16_t> to_16bit(Dtype dt, const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  kernels::round_to_16bit(dt, out.data(), x.data(), (int64_t)x.size());
  return out;
}

// A linear layer's inputs, scaled so that outputs are O(1) (GELU's interesting range).
struct Linear {
  int N, C, OC;
  std::vector<float> inp, weight, bias;
  Linear(int n, int c, int oc, uint64_t seed)
      : N(n), C(c), OC(oc), inp(random_floats((int64_t)n * c, seed, -2.0f, 2.0f)),
        weight(random_floats((int64_t)oc * c, seed + 1, -1.0f / std::sqrt((float)c),
                             1.0f / std::sqrt((float)c))),
        bias(random_floats(oc, seed + 2)) {}
};

struct Outputs {
  std::vector<float> out, gelu_out;
};

// The GPU forward (dt fp32: matmul_forward; else matmul_forward_16bit on rounded copies).
// Outputs start as NaN: nothing may be read from them. out and bias sit `offset` floats
// into their buffers (1: 4-byte aligned, like a slice of a larger buffer).
Outputs gpu_forward(Dtype dt, const Linear& l, bool with_bias, bool with_gelu, int offset = 0) {
  const int64_t n = (int64_t)l.N * l.OC;
  auto d_out = DeviceArray<float>::from_host(std::vector<float>((size_t)(n + offset), NAN));
  auto d_gelu = DeviceArray<float>::from_host(std::vector<float>((size_t)n, NAN));
  std::vector<float> shifted_bias((size_t)offset, NAN);
  shifted_bias.insert(shifted_bias.end(), l.bias.begin(), l.bias.end());
  auto d_bias = DeviceArray<float>::from_host(shifted_bias);
  float* out = d_out.data() + offset;
  float* gelu = with_gelu ? d_gelu.data() : nullptr;
  const float* bias = with_bias ? d_bias.data() + offset : nullptr;
  if (dt == Dtype::fp32) {
    auto d_inp = DeviceArray<float>::from_host(l.inp);
    auto d_w = DeviceArray<float>::from_host(l.weight);
    cuda::matmul_forward(out, gelu, d_inp.data(), d_w.data(), bias, l.N, l.C, l.OC, nullptr);
  } else {
    auto d_inp = DeviceArray<uint16_t>::from_host(to_16bit(dt, l.inp));
    auto d_w = DeviceArray<uint16_t>::from_host(to_16bit(dt, l.weight));
    cuda::matmul_forward_16bit(dt, out, gelu, d_inp.data(), d_w.data(), bias, l.N, l.C, l.OC,
                               nullptr);
  }
  std::vector<float> got = d_out.download();
  got.erase(got.begin(), got.begin() + offset);
  return {got, with_gelu ? d_gelu.download() : std::vector<float>{}};
}

Outputs cpu_forward(Dtype dt, const Linear& l, bool with_bias, bool with_gelu) {
  Outputs o{std::vector<float>((size_t)l.N * l.OC), {}};
  const float* bias = with_bias ? l.bias.data() : nullptr;
  if (dt == Dtype::fp32) {
    kernels::matmul_forward(o.out.data(), l.inp.data(), l.weight.data(), bias, l.N, l.C, l.OC);
  } else {
    const auto inp16 = to_16bit(dt, l.inp), w16 = to_16bit(dt, l.weight);
    kernels::matmul_forward_16bit(dt, o.out.data(), inp16.data(), w16.data(), bias, l.N, l.C, l.OC);
  }
  if (with_gelu) {
    o.gelu_out.resize(o.out.size());
    kernels::gelu_forward(o.gelu_out.data(), o.out.data(), (int64_t)o.out.size());
  }
  return o;
}

void check_forward(Dtype dt, int N, int C, int OC, bool with_bias, bool with_gelu,
                   int offset = 0) {
  SCOPED_TRACE(testing::Message() << kernels::dtype_name(dt) << " N=" << N << " C=" << C
                                  << " OC=" << OC << " bias=" << with_bias
                                  << " gelu=" << with_gelu << " offset=" << offset);
  const Linear l(N, C, OC, 100 + N + OC);
  const Outputs got = gpu_forward(dt, l, with_bias, with_gelu, offset);
  const Outputs want = cpu_forward(dt, l, with_bias, with_gelu);
  const double tol = dt == Dtype::fp32 ? kTol : kTol16;
  EXPECT_CLOSE_TO_SCALE(got.out, want.out, tol);
  if (with_gelu) EXPECT_CLOSE_TO_SCALE(got.gelu_out, want.gelu_out, small_shapes() ? tol : kTol16);
}

struct Grads {
  std::vector<float> dinp, dweight, dbias;
};

// The GPU backward from `start` (an empty vector: that gradient is not wanted, null).
// The bias scratch starts as NaN: the kernels must write every partial they read.
Grads gpu_backward(Dtype dt, const Grads& start, const std::vector<float>& dout, const Linear& l) {
  auto up = [](const std::vector<float>& v) {
    return DeviceArray<float>::from_host(v.empty() ? std::vector<float>(1) : v);
  };
  auto d_dinp = up(start.dinp), d_dw = up(start.dweight), d_db = up(start.dbias);
  auto d_scratch = DeviceArray<float>::from_host(
      std::vector<float>((size_t)cuda::matmul_backward_scratch(l.N, l.OC), NAN));
  auto d_dout = DeviceArray<float>::from_host(dout);
  float* dinp = start.dinp.empty() ? nullptr : d_dinp.data();
  float* dw = start.dweight.empty() ? nullptr : d_dw.data();
  float* db = start.dbias.empty() ? nullptr : d_db.data();
  if (dt == Dtype::fp32) {
    auto d_inp = DeviceArray<float>::from_host(l.inp);
    auto d_w = DeviceArray<float>::from_host(l.weight);
    cuda::matmul_backward(dinp, dw, db, d_scratch.data(), d_dout.data(), d_inp.data(), d_w.data(),
                          l.N, l.C, l.OC, nullptr);
  } else {
    auto d_dout16 = DeviceArray<uint16_t>::from_host(to_16bit(dt, dout));
    auto d_inp = DeviceArray<uint16_t>::from_host(to_16bit(dt, l.inp));
    auto d_w = DeviceArray<uint16_t>::from_host(to_16bit(dt, l.weight));
    cuda::matmul_backward_16bit(dt, dinp, dw, db, d_scratch.data(), d_dout.data(), d_dout16.data(),
                                d_inp.data(), d_w.data(), l.N, l.C, l.OC, nullptr);
  }
  Grads g;
  if (dinp) g.dinp = d_dinp.download();
  if (dw) g.dweight = d_dw.download();
  if (db) g.dbias = d_db.download();
  return g;
}

void cpu_backward(Dtype dt, Grads& g, const std::vector<float>& dout, const Linear& l) {
  float* dinp = g.dinp.empty() ? nullptr : g.dinp.data();
  float* dw = g.dweight.empty() ? nullptr : g.dweight.data();
  float* db = g.dbias.empty() ? nullptr : g.dbias.data();
  if (dt == Dtype::fp32) {
    // kernels::matmul_backward<float> always writes dinp.
    std::vector<float> scratch_dinp(dinp ? 0 : (size_t)l.N * l.C);
    kernels::matmul_backward(dinp ? dinp : scratch_dinp.data(), dw, db, dout.data(), l.inp.data(),
                             l.weight.data(), l.N, l.C, l.OC);
  } else {
    const auto dout16 = to_16bit(dt, dout), inp16 = to_16bit(dt, l.inp),
               w16 = to_16bit(dt, l.weight);
    kernels::matmul_backward_16bit(dt, dinp, dw, db, dout.data(), dout16.data(), inp16.data(),
                                   w16.data(), l.N, l.C, l.OC);
  }
}

// want_* false: that gradient is null.
void check_backward(Dtype dt, int N, int C, int OC, bool want_dinp = true, bool want_dw = true,
                    bool want_db = true) {
  SCOPED_TRACE(testing::Message() << kernels::dtype_name(dt) << " N=" << N << " C=" << C
                                  << " OC=" << OC << " dinp=" << want_dinp << " dweight="
                                  << want_dw << " dbias=" << want_db);
  const Linear l(N, C, OC, 200 + N + OC);
  const auto dout = random_floats((int64_t)N * OC, 300 + N);
  // Nonzero starting gradients: the backward adds into them.
  Grads want{random_floats((int64_t)N * C, 301), random_floats((int64_t)OC * C, 302),
             random_floats(OC, 303)};
  if (!want_dinp) want.dinp.clear();
  if (!want_dw) want.dweight.clear();
  if (!want_db) want.dbias.clear();
  const Grads got = gpu_backward(dt, want, dout, l);
  cpu_backward(dt, want, dout, l);
  const double tol = dt == Dtype::fp32 ? kTol : kTol16;
  EXPECT_CLOSE_TO_SCALE(got.dinp, want.dinp, tol);
  EXPECT_CLOSE_TO_SCALE(got.dweight, want.dweight, tol);
  EXPECT_CLOSE_TO_SCALE(got.dbias, want.dbias, kTol);  // the bias sums exact fp32 dout
}

TEST(CudaMatmul, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (bool bias : {true, false}) {
    check_forward(Dtype::fp32, 37, 96, 80, bias, false);
    check_forward(Dtype::fp32, 5, 7, 3, bias, false);  // nothing a multiple of anything
  }
  if (!small_shapes()) check_forward(Dtype::fp32, 1024, 768, 2304, true, false);
}

TEST(CudaMatmul, GeluEpilogueWritesPreactivationAndGelu) {
  REQUIRE_GPU();
  for (bool bias : {true, false}) {
    check_forward(Dtype::fp32, 37, 64, 80, bias, true);  // OC % 8 == 0: the fused epilogue
    check_forward(Dtype::fp32, 37, 64, 20, bias, true);  // OC % 8 != 0: GEMM, then our GELU
  }
  if (!small_shapes()) check_forward(Dtype::fp32, 1024, 768, 3072, true, true);
}

// cuBLASLt's heuristic is not told the bias / aux pointers' alignment and may pick a kernel
// that assumes 16 bytes: a bias or out at 4 bytes takes the unfused path, same results.
TEST(CudaMatmul, UnalignedBiasOrPreactivationTakesTheUnfusedPath) {
  REQUIRE_GPU();
  for (bool gelu : {false, true}) {
    check_forward(Dtype::fp32, 37, 64, 80, true, gelu, /*offset=*/1);
    check_forward(Dtype::bf16, 37, 64, 80, true, gelu, /*offset=*/3);
  }
}

TEST(CudaMatmul, Forward16bitMatchesCpu) {
  REQUIRE_GPU();
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    check_forward(dt, 37, 96, 80, true, false);
    check_forward(dt, 37, 64, 40, true, true);
    check_forward(dt, 9, 24, 20, false, true);
    if (!small_shapes()) check_forward(dt, 1024, 768, 3072, true, true);
  }
}

TEST(CudaMatmul, BackwardMatchesCpu) {
  REQUIRE_GPU();
  check_backward(Dtype::fp32, 300, 96, 40);  // two bias row blocks, the last one short
  check_backward(Dtype::fp32, 37, 64, 80);
  check_backward(Dtype::fp32, 5, 7, 3);
  if (!small_shapes()) check_backward(Dtype::fp32, 4096, 768, 3072);
}

TEST(CudaMatmul, BackwardSkipsNullGradients) {
  REQUIRE_GPU();
  check_backward(Dtype::fp32, 40, 32, 24, false, true, true);
  check_backward(Dtype::fp32, 40, 32, 24, true, false, true);  // a frozen weight (LoRA)
  check_backward(Dtype::fp32, 40, 32, 24, true, true, false);
  check_backward(Dtype::bf16, 40, 32, 24, false, false, true);
}

TEST(CudaMatmul, Backward16bitMatchesCpu) {
  REQUIRE_GPU();
  for (Dtype dt : {Dtype::bf16, Dtype::fp16}) {
    check_backward(dt, 300, 64, 40);
    if (!small_shapes()) check_backward(dt, 4096, 768, 3072);
  }
}

TEST(CudaMatmul, BackwardIsBitIdenticalAcrossRuns) {
  REQUIRE_GPU();
  const int N = small_shapes() ? 600 : 8192, C = small_shapes() ? 32 : 768, OC = small_shapes() ? 72 : 2304;
  const Linear l(N, C, OC, 400);
  const auto dout = random_floats((int64_t)N * OC, 401);
  const Grads zero{std::vector<float>((size_t)N * C), std::vector<float>((size_t)OC * C),
                   std::vector<float>(OC)};
  const Grads first = gpu_backward(Dtype::fp32, zero, dout, l);
  const Grads second = gpu_backward(Dtype::fp32, zero, dout, l);
  EXPECT_BITWISE_EQUAL(first.dbias, second.dbias);
  EXPECT_BITWISE_EQUAL(first.dinp, second.dinp);
  EXPECT_BITWISE_EQUAL(first.dweight, second.dweight);
}

// ---- gemm, gemm_batched: sgemm's row-major contract ------------------------------------

struct GemmCase {
  bool ta, tb;
  int M, N, K;
  int lda, ldb, ldc;  // each past its matrix's row length: padding that must not be used
  int64_t stride_a, stride_b, stride_c;
  int batch;
  GemmCase(bool ta_, bool tb_, int M_, int N_, int K_, int batch_)
      : ta(ta_), tb(tb_), M(M_), N(N_), K(K_), lda((ta_ ? M_ : K_) + 3), ldb((tb_ ? K_ : N_) + 5),
        ldc(N_ + 2), stride_a((int64_t)lda * (ta_ ? K_ : M_) + 7),
        stride_b((int64_t)ldb * (tb_ ? N_ : K_) + 1), stride_c((int64_t)ldc * M_ + 4),
        batch(batch_) {}
};

// The GPU (gemm for batch 1, else gemm_batched) and sgemm per matrix, from the same C.
void check_gemm(const GemmCase& g, float alpha, float beta) {
  SCOPED_TRACE(testing::Message() << "trans_a=" << g.ta << " trans_b=" << g.tb << " M=" << g.M
                                  << " N=" << g.N << " K=" << g.K << " batch=" << g.batch
                                  << " alpha=" << alpha << " beta=" << beta);
  const auto A = random_floats(g.stride_a * g.batch, 500);
  const auto B = random_floats(g.stride_b * g.batch, 501);
  // beta == 0: C starts as NaN, which must not be read (sgemm's contract too).
  auto C = beta == 0.0f ? std::vector<float>((size_t)(g.stride_c * g.batch), NAN)
                        : random_floats(g.stride_c * g.batch, 502);
  auto d_A = DeviceArray<float>::from_host(A), d_B = DeviceArray<float>::from_host(B),
       d_C = DeviceArray<float>::from_host(C);
  if (g.batch == 1)
    cuda::gemm(g.ta, g.tb, g.M, g.N, g.K, alpha, d_A.data(), g.lda, d_B.data(), g.ldb, beta,
               d_C.data(), g.ldc, nullptr);
  else
    cuda::gemm_batched(g.ta, g.tb, g.M, g.N, g.K, alpha, d_A.data(), g.lda, g.stride_a, d_B.data(),
                       g.ldb, g.stride_b, beta, d_C.data(), g.ldc, g.stride_c, g.batch, nullptr);
  const auto got = d_C.download();
  for (int b = 0; b < g.batch; b++)
    kernels::sgemm(g.ta, g.tb, g.M, g.N, g.K, alpha, A.data() + b * g.stride_a, g.lda,
                   B.data() + b * g.stride_b, g.ldb, beta, C.data() + b * g.stride_c, g.ldc);
  // Compare the M x N results; the padding (NaN or C's values) must be unchanged.
  std::vector<float> got_c, want_c, got_pad, want_pad;
  for (int64_t i = 0; i < g.stride_c * g.batch; i++) {
    const int64_t in_matrix = i % g.stride_c, row = in_matrix / g.ldc, col = in_matrix % g.ldc;
    const bool inside = row < g.M && col < g.N;
    (inside ? got_c : got_pad).push_back(got[(size_t)i]);
    (inside ? want_c : want_pad).push_back(C[(size_t)i]);
  }
  EXPECT_CLOSE_TO_SCALE(got_c, want_c, kTol);
  EXPECT_EQ(0, std::memcmp(got_pad.data(), want_pad.data(), got_pad.size() * sizeof(float)))
      << "the GEMM wrote outside its M x N matrix";
}

TEST(CudaGemm, AllTransposesWithPaddedLeadingDimensions) {
  REQUIRE_GPU();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm(GemmCase(ta, tb, 13, 21, 17, 1), 0.5f, 0.75f);
      check_gemm(GemmCase(ta, tb, 13, 21, 17, 1), 1.0f, 0.0f);
      check_gemm(GemmCase(ta, tb, 1, 9, 1, 1), 2.0f, 1.0f);
      if (!small_shapes()) check_gemm(GemmCase(ta, tb, 512, 768, 384, 1), 1.0f, 1.0f);
    }
}

TEST(CudaGemm, BatchedMatchesSgemmPerMatrix) {
  REQUIRE_GPU();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm(GemmCase(ta, tb, 11, 6, 9, 3), 1.0f, 0.0f);
      check_gemm(GemmCase(ta, tb, 11, 6, 9, 3), -0.25f, 1.0f);
      if (!small_shapes()) check_gemm(GemmCase(ta, tb, 256, 64, 256, 24), 1.0f, 0.5f);
    }
}

TEST(CudaGemm, KZeroScalesC) {
  REQUIRE_GPU();
  const auto C = random_floats(12, 503);
  auto d_C = DeviceArray<float>::from_host(C);
  DeviceArray<float> d_A(1), d_B(1);
  cuda::gemm(false, false, 3, 4, 0, 1.0f, d_A.data(), 1, d_B.data(), 4, 0.5f, d_C.data(), 4,
             nullptr);
  const auto got = d_C.download();
  for (size_t i = 0; i < C.size(); i++) EXPECT_EQ(got[i], 0.5f * C[i]);
}

TEST(CudaGemm, FailureNamesTheGemmAndItsShapes) {
  REQUIRE_GPU();
  DeviceArray<float> d_A(64), d_B(64), d_C(64);
  try {  // lda = 2 < K = 4: an impossible layout
    cuda::gemm(false, false, 4, 4, 4, 1.0f, d_A.data(), 2, d_B.data(), 4, 0.0f, d_C.data(), 4,
               nullptr);
    ADD_FAILURE() << "no error for lda < K";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("gemm (M=4, N=4, K=4"), std::string::npos) << what;
    EXPECT_NE(what.find("lda=2"), std::string::npos) << what;
  }
}

// ---- cuBLASLt itself: the column-major meaning the emulator implements ---------------

// D [m, n] = A [m, k] (ld 3 > m) times op(B) with TRANSB = T (B stored n x k), plus a bias
// over D's rows: every element written from cuBLASLt's documented definition.
TEST(CudaCublasLt, ColumnMajorMeaningOfARawCall) {
  REQUIRE_GPU();
  const int m = 2, n = 3, k = 4, lda = 3, ldb = 3, ldd = 2;
  const auto A = random_floats(lda * k, 600), B = random_floats(ldb * k, 601),
             bias = random_floats(m, 602);
  std::vector<float> want(ldd * n);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      float s = 0;
      for (int p = 0; p < k; p++) s += A[i + p * lda] * B[j + p * ldb];  // op(B)(p, j) = B(j, p)
      want[i + j * ldd] = s + bias[i];
    }
  auto d_A = DeviceArray<float>::from_host(A), d_B = DeviceArray<float>::from_host(B),
       d_bias = DeviceArray<float>::from_host(bias);
  DeviceArray<float> d_D(ldd * n);
  cublasLtHandle_t handle;
  ASSERT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, ld;
  ASSERT_EQ(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  const int32_t trans = CUBLAS_OP_T;
  const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  const void* bias_ptr = d_bias.data();
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans, sizeof(trans)),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                           sizeof(epilogue)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                           sizeof(bias_ptr)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, m, k, lda), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, n, k, ldb), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, ldd), CUBLAS_STATUS_SUCCESS);
  const float alpha = 1.0f, beta = 0.0f;
  EXPECT_EQ(cublasLtMatmul(handle, op, &alpha, d_A.data(), la, d_B.data(), lb, &beta, d_D.data(),
                           ld, d_D.data(), ld, nullptr, nullptr, 0, nullptr),
            CUBLAS_STATUS_SUCCESS);
  cuda::check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  EXPECT_CLOSE_TO_SCALE(d_D.download(), want, kTol);
  if (small_shapes()) {  // the emulator refuses what it does not compute: TF32 here
    cublasLtMatmulDesc_t tf32;
    ASSERT_EQ(cublasLtMatmulDescCreate(&tf32, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmul(handle, tf32, &alpha, d_A.data(), la, d_B.data(), lb, &beta,
                             d_D.data(), ld, d_D.data(), ld, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_NOT_SUPPORTED);
    cublasLtMatmulDescDestroy(tf32);
  }
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(handle);
}

}  // namespace
}  // namespace tessera::gpu_test
