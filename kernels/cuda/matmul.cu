// Linear layers and general GEMMs through cuBLASLt (kernels/cuda/ops.h: matmul_forward,
// matmul_forward_16bit, matmul_backward, matmul_backward_16bit, gemm, gemm_batched), and
// the bias gradient, which is ours.
//
// Row-major on a column-major library: a row-major X [R, C] with row stride ld, read
// column-major, is X^T [C, R] with the same ld. So the row-major C = op(A) op(B) of
// kernels/cpu/gemm.h is computed as the column-major C^T = op(B)^T op(A)^T: cuBLASLt's
// "A" is our B and its "B" our A, its m = our N and its n = our M, and each operand keeps
// its own transpose flag. A bias over the N columns of row-major C is a bias over the m
// rows of cuBLASLt's D: exactly what CUBLASLT_EPILOGUE_BIAS adds.
//
// Precision: fp32 GEMMs run with CUBLAS_COMPUTE_32F, fp32 FMAs: not TF32, whose 10-bit
// inputs would miss the CPU by ~1e-3. 16-bit GEMMs take A and B in bf16 / fp16 and
// accumulate and write fp32 (the CPU's gemm_16bit contract).
//
// The GELU epilogue (matmul_forward with gelu_out): CUBLASLT_EPILOGUE_GELU_AUX(_BIAS) writes
// D = gelu(x) and x, the activation's input, to its aux matrix. Our contract is out = x
// (kept for the backward) and gelu_out = gelu(x), so D is gelu_out and aux is out.
// cuBLASLt's GELU is the tanh approximation, GPT-2's: NVIDIA's documentation says only
// "GELU", but PyTorch, which fuses it only for gelu(approximate="tanh"), says so
// (pytorch/pytorch#104061); the GPU test measures it against the CPU's tanh GELU. The
// aux matrix's leading dimension must be a multiple of 8, and cuBLASLt need not offer the
// epilogue for every type and alignment: where it does not, the GEMM writes out (bias
// epilogue) and matmul_gelu_kernel follows (unfused: one more pass over out).
//
// State: one cuBLASLt handle and one 32 MiB workspace, created on first use, for the
// process's current device; GEMMs must not run on two streams at once (they would share
// the workspace). The algorithm picked by cuBLASLt's heuristic is cached per problem
// (shapes, types, epilogue, pointer alignments): the heuristic query costs tens of
// microseconds, a GPT-2 step makes hundreds of GEMMs. cuBLASLt's results are the same
// bits every run for one algorithm on one GPU model, so caching also keeps runs equal.
//
// Kernels (the bias gradient is a two-pass deterministic reduction: partial column sums
// per block of kBiasRows rows, then a sum of the partials in block order; no atomics):
//   matmul_bias_partial_sums_kernel: grid (ceil(OC / 32), ceil(N / kBiasRows)), block (32, 8),
//     static smem 8 x 32 floats
//   matmul_bias_finish_kernel: grid ceil(OC / 256), block 256, no smem
//   matmul_gelu_kernel (unfused GELU): grid ceil(n / 256), block 256, no smem
//   gemm_scale_kernel (a GEMM with K = 0: C = beta C): grid ceil(batch M N / 256), block 256
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "base/error.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// Rows per partial sum of the bias gradient. A constant, so that the bits depend on N
// alone, not on the GPU: 256 rows keep ~N/256 blocks per 32 columns in flight.
constexpr int kBiasRows = 256;
constexpr int kBiasCols = 32, kBiasWarps = 8;
constexpr int kThreads = 256;
// false: always the unfused GELU (should the GPU test find cuBLASLt's GELU too coarse).
constexpr bool kFuseGeluEpilogue = true;
constexpr float kSqrt2OverPi = 0.7978845608028654f;  // (float)sqrt(2 / pi), as the CPU's
}  // namespace

// partial[blockIdx.y, col] = sum of dout[row, col] over the block's kBiasRows rows: warp
// y sums rows y, y + 8, ... (lanes on consecutive columns: coalesced), then one thread
// per column adds the 8 warp sums in order.
__global__ void matmul_bias_partial_sums_kernel(float* partial, const float* dout, int N, int OC) {
  __shared__ float sums[kBiasWarps][kBiasCols];
  const int col = blockIdx.x * kBiasCols + threadIdx.x;
  const int row0 = blockIdx.y * kBiasRows;
  const int row1 = min(row0 + kBiasRows, N);
  float s = 0.0f;
  if (col < OC) {
    for (int r = row0 + threadIdx.y; r < row1; r += kBiasWarps) s += dout[(int64_t)r * OC + col];
  }
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < OC) {
    float t = 0.0f;
    for (int w = 0; w < kBiasWarps; w++) t += sums[w][threadIdx.x];
    partial[(int64_t)blockIdx.y * OC + col] = t;
  }
}

// dbias[col] += the sum of partial[0.., col] over the `blocks` row blocks, in order.
__global__ void matmul_bias_finish_kernel(float* dbias, const float* partial, int blocks, int OC) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= OC) return;
  float s = 0.0f;
  for (int b = 0; b < blocks; b++) s += partial[(int64_t)b * OC + col];
  dbias[col] += s;
}

// out[i] = gelu(inp[i]), GPT-2's tanh approximation (kernels/cpu/gelu.cpp's formula).
__global__ void matmul_gelu_kernel(float* out, const float* inp, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = inp[i];
  out[i] = 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// C[b][i, j] *= beta (0 when beta is 0, whatever C held), for i < M, j < N, b < batch.
__global__ void gemm_scale_kernel(float* C, int M, int N, int64_t ldc, int64_t stride_c,
                                  int batch, float beta) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (int64_t)batch * M * N) return;
  const int64_t j = idx % N, i = (idx / N) % M, b = idx / ((int64_t)M * N);
  float* c = C + b * stride_c + i * ldc + j;
  *c = beta == 0.0f ? 0.0f : beta * *c;
}

namespace {

// One GEMM in the row-major terms of kernels/cpu/gemm.h, with cuBLASLt's extras:
// C[M,N] = alpha op(A) op(B) + beta C (+ bias[N] on every row); with preact, C gets the
// gelu of that and preact [M, N] (row stride ldc) the value before it.
struct Gemm {
  const char* name;
  bool trans_a, trans_b;
  int M, N, K;
  cudaDataType_t type;  // of A and B
  float alpha, beta;
  const void* A;
  int64_t lda;
  const void* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  int batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  const float* bias = nullptr;
  float* preact = nullptr;
};

std::string describe(const Gemm& g) {
  return describe_kernel(g.name, {{"M", g.M}, {"N", g.N}, {"K", g.K}, {"trans_a", g.trans_a},
                                  {"trans_b", g.trans_b}, {"lda", g.lda}, {"ldb", g.ldb},
                                  {"ldc", g.ldc}, {"batch", g.batch}, {"type", g.type}});
}

int64_t element_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

// cuBLASLt's alignment preferences cover A, B, C and D but not the epilogue's bias and aux
// pointers: its heuristic may pick a kernel that assumes them 16-byte aligned, which then
// faults with "misaligned address" on a slice of a larger buffer (pytorch/pytorch#194497).
// A bias or aux matrix not so aligned takes the unfused path.
bool epilogue_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// The largest power of two (at most 256) dividing the address of every matrix of a batch.
uint32_t alignment(const void* p, int64_t stride_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(p) | (uint64_t)stride_bytes | 256u;
  return (uint32_t)(bits & (~bits + 1));
}

// cuBLASLt descriptors, destroyed when the call ends (also by an exception).
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using AlgoKey = std::array<int64_t, 21>;

// What the heuristic said for one problem: an algorithm, or none (found == false).
struct Heuristic {
  bool found;
  cublasLtMatmulAlgo_t algo;
};

struct LtState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<AlgoKey, Heuristic> algos;
};
std::mutex g_mutex;
LtState g_lt;

// Throws naming the GEMM unless status is success.
void check_gemm(cublasStatus_t status, const char* step, const Gemm& g) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  check_cublas(status, (std::string(step) + " for " + describe(g)).c_str());
}

template <typename T>
void set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v, const Gemm& g) {
  check_gemm(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)),
             "cublasLtMatmulDescSetAttribute", g);
}
template <typename T>
void set(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, const T& v,
         const Gemm& g) {
  check_gemm(cublasLtMatrixLayoutSetAttribute(l, attr, &v, sizeof(v)),
             "cublasLtMatrixLayoutSetAttribute", g);
}
template <typename T>
void set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const T& v,
         const Gemm& g) {
  check_gemm(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof(v)),
             "cublasLtMatmulPreferenceSetAttribute", g);
}

// g's epilogue: the bias and / or GELU-with-aux it asks for.
cublasLtEpilogue_t epilogue_of(const Gemm& g) {
  return g.preact ? (g.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                  : (g.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
}

// The operation and matrix layouts of g in cuBLASLt's column-major terms (see the top):
// D [m, n] = op(LA) op(LB), LA = our B, LB = our A, m = our N, n = our M.
void make_descriptors(Descriptors& d, const Gemm& g, cublasLtEpilogue_t epilogue) {
  const int64_t m = g.N, n = g.M, k = g.K;
  const bool ta = g.trans_b, tb = g.trans_a;
  check_gemm(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
             "cublasLtMatmulDescCreate", g);
  set(d.op, CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)(ta ? CUBLAS_OP_T : CUBLAS_OP_N), g);
  set(d.op, CUBLASLT_MATMUL_DESC_TRANSB, (int32_t)(tb ? CUBLAS_OP_T : CUBLAS_OP_N), g);
  set(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)epilogue, g);
  if (g.bias) set(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)g.bias, g);
  if (g.preact) {
    set(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)g.preact, g);
    set(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)g.ldc, g);
    if (g.batch > 1) set(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, g.stride_c, g);
  }
  check_gemm(cublasLtMatrixLayoutCreate(&d.a, g.type, ta ? k : m, ta ? m : k, g.ldb),
             "cublasLtMatrixLayoutCreate", g);
  check_gemm(cublasLtMatrixLayoutCreate(&d.b, g.type, tb ? n : k, tb ? k : n, g.lda),
             "cublasLtMatrixLayoutCreate", g);
  check_gemm(cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, m, n, g.ldc),
             "cublasLtMatrixLayoutCreate", g);
  if (g.batch > 1) {
    const int32_t count = g.batch;
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {d.a, g.stride_b}, {d.b, g.stride_a}, {d.c, g.stride_c}};
    for (const auto& [layout, stride] : layouts) {
      set(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, count, g);
      set(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride, g);
    }
  }
}

// Runs g on cuBLASLt (see the top of the file for the mapping). Returns false, computing
// nothing, if cuBLASLt offers no algorithm and `may_refuse` (the fused GELU, which has a
// fallback); any other failure throws, naming the GEMM.
bool run(const Gemm& g, cudaStream_t stream, bool may_refuse = false) {
  if (g.M <= 0 || g.N <= 0 || g.batch <= 0) return true;
  if (g.K <= 0) {  // no products: C = beta C (cuBLASLt wants k >= 1)
    check(!g.bias && !g.preact, "gemm: an epilogue with K = 0 in " + describe(g));
    launch("gemm (K = 0)", {{"M", g.M}, {"N", g.N}, {"batch", g.batch}}, gemm_scale_kernel,
           dim3((unsigned)ceil_div((int64_t)g.batch * g.M * g.N, kThreads)), dim3(kThreads), 0,
           stream, g.C, g.M, g.N, g.ldc, g.stride_c, g.batch, g.beta);
    return true;
  }
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_lt.workspace == nullptr)  // first: a handle without its workspace must never run
    g_lt.workspace = device_malloc(kWorkspaceBytes, "the cuBLASLt workspace");
  if (g_lt.handle == nullptr) check_gemm(cublasLtCreate(&g_lt.handle), "cublasLtCreate", g);
  check(epilogue_aligned(g.bias) && epilogue_aligned(g.preact),
        "gemm: the epilogue's bias or aux pointer is not 16-byte aligned in " + describe(g));
  // cuBLASLt's problem: D [m, n] = op(LA) op(LB), LA = our B, LB = our A.
  const int64_t m = g.N, n = g.M, k = g.K;
  const bool ta = g.trans_b, tb = g.trans_a;
  const int64_t eb = element_bytes(g.type);
  const cublasLtEpilogue_t epilogue = epilogue_of(g);
  Descriptors d;
  make_descriptors(d, g, epilogue);
  // The heuristic sees no data pointers: it is told how A, B and C/D are aligned, and
  // reads the bias / aux pointers from the descriptor (without honouring their alignment:
  // epilogue_aligned).
  const uint32_t align_a = alignment(g.B, g.stride_b * eb);
  const uint32_t align_b = alignment(g.A, g.stride_a * eb);
  const uint32_t align_c = alignment(g.C, g.stride_c * 4);
  const AlgoKey key = {ta, tb, m, n, k, g.type, g.ldb, g.lda, g.ldc, g.batch, g.stride_b,
                       g.stride_a, g.stride_c, epilogue, align_a, align_b, align_c,
                       alignment(g.bias, 0), alignment(g.preact, 0), 0, 0};
  auto it = g_lt.algos.find(key);
  if (it == g_lt.algos.end()) {
    check_gemm(cublasLtMatmulPreferenceCreate(&d.pref), "cublasLtMatmulPreferenceCreate", g);
    set(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, (uint64_t)kWorkspaceBytes, g);
    set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a, g);
    set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b, g);
    set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c, g);
    set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c, g);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g_lt.handle, d.op, d.a, d.b, d.c, d.c,
                                                            d.pref, 1, &result, &found);
    const bool ok = s == CUBLAS_STATUS_SUCCESS && found > 0;
    if (!ok && !may_refuse) {
      const std::string why = "cublasLtMatmulAlgoGetHeuristic (no algorithm; epilogue " +
                              std::to_string(epilogue) + ", alignments in bytes: A " +
                              std::to_string(align_a) + ", B " + std::to_string(align_b) +
                              ", C/D " + std::to_string(align_c) + ")";
      check_gemm(s != CUBLAS_STATUS_SUCCESS ? s : CUBLAS_STATUS_NOT_SUPPORTED, why.c_str(), g);
    }
    it = g_lt.algos.emplace(key, Heuristic{ok, result.algo}).first;
  }
  if (!it->second.found) return false;  // only cached for a GEMM that may be refused
  const cublasStatus_t s = cublasLtMatmul(g_lt.handle, d.op, &g.alpha, g.B, d.a, g.A, d.b, &g.beta,
                                          g.C, d.c, g.C, d.c, &it->second.algo, g_lt.workspace,
                                          kWorkspaceBytes, stream);
  // Offered, then refused (an unsupported combination of types can also come back as
  // INVALID_VALUE, cublasLt.h says): remember.
  if ((s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE) && may_refuse) {
    it->second.found = false;
    return false;
  }
  check_gemm(s, "cublasLtMatmul", g);
  return true;
}

cudaDataType_t cuda_type(Dtype dt) {
  check(dt == Dtype::bf16 || dt == Dtype::fp16,
        std::string("matmul_*_16bit: dtype must be bf16 or fp16, got ") + dtype_name(dt));
  return dt == Dtype::bf16 ? CUDA_R_16BF : CUDA_R_16F;
}

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias, and gelu_out = gelu(out) when wanted.
void linear_forward(const char* name, cudaDataType_t type, float* out, float* gelu_out,
                    const void* inp, const void* weight, const float* bias, int N, int C, int OC,
                    cudaStream_t stream) {
  Gemm g{name, false, true, N, OC, C, type, 1.0f, 0.0f, inp, C, weight, C, out, OC};
  const bool fuse_bias = epilogue_aligned(bias);
  if (fuse_bias) g.bias = bias;
  // The aux matrix (out) must be 16-byte aligned and its ld a multiple of 8.
  if (gelu_out && kFuseGeluEpilogue && fuse_bias && epilogue_aligned(out) && OC % 8 == 0) {
    Gemm fused = g;
    fused.C = gelu_out;
    fused.preact = out;
    if (run(fused, stream, /*may_refuse=*/true)) return;
  }
  run(g, stream);
  if (bias && !fuse_bias) add_bias(out, bias, N, OC, stream);
  if (gelu_out == nullptr) return;
  const int64_t n = (int64_t)N * OC;
  launch("matmul_forward gelu", {{"N", N}, {"OC", OC}}, matmul_gelu_kernel,
         dim3((unsigned)ceil_div(n, kThreads)), dim3(kThreads), 0, stream, gelu_out, out, n);
}

// dbias[OC] += column sums of dout[N, OC] (two-pass, deterministic).
void bias_backward(float* dbias, float* scratch, const float* dout, int N, int OC,
                   cudaStream_t stream) {
  if (N <= 0 || OC <= 0) return;
  const int blocks = (int)ceil_div(N, kBiasRows);
  check(blocks <= 65535, "matmul_backward: N = " + std::to_string(N) +
                             " rows exceed the bias gradient's grid (at most 65535 * " +
                             std::to_string(kBiasRows) + ")");
  launch("matmul_backward bias partial sums", {{"N", N}, {"OC", OC}},
         matmul_bias_partial_sums_kernel,
         dim3((unsigned)ceil_div(OC, kBiasCols), (unsigned)blocks), dim3(kBiasCols, kBiasWarps),
         0, stream, scratch, dout, N, OC);
  launch("matmul_backward bias sum", {{"N", N}, {"OC", OC}}, matmul_bias_finish_kernel,
         dim3((unsigned)ceil_div(OC, kThreads)), dim3(kThreads), 0, stream, dbias, scratch, blocks,
         OC);
}

void linear_backward(const char* name, cudaDataType_t type, float* dinp, float* dweight,
                     float* dbias, float* scratch, const float* dout, const void* dout_gemm,
                     const void* inp, const void* weight, int N, int C, int OC,
                     cudaStream_t stream) {
  if (dinp)  // dinp[N,C] += dout[N,OC] @ weight[OC,C]
    run(Gemm{name, false, false, N, C, OC, type, 1.0f, 1.0f, dout_gemm, OC, weight, C, dinp, C},
        stream);
  if (dweight)  // dweight[OC,C] += dout^T @ inp[N,C]
    run(Gemm{name, true, false, OC, C, N, type, 1.0f, 1.0f, dout_gemm, OC, inp, C, dweight, C},
        stream);
  if (dbias) bias_backward(dbias, scratch, dout, N, OC, stream);
}

}  // namespace

void matmul_forward(float* out, float* gelu_out, const float* inp, const float* weight,
                    const float* bias, int N, int C, int OC, cudaStream_t stream) {
  linear_forward("matmul_forward", CUDA_R_32F, out, gelu_out, inp, weight, bias, N, C, OC, stream);
}

void matmul_forward_16bit(Dtype dt, float* out, float* gelu_out, const uint16_t* inp16,
                          const uint16_t* weight16, const float* bias, int N, int C, int OC,
                          cudaStream_t stream) {
  linear_forward("matmul_forward_16bit", cuda_type(dt), out, gelu_out, inp16, weight16, bias, N, C,
                 OC, stream);
}

int64_t matmul_backward_scratch(int N, int OC) { return ceil_div(N, kBiasRows) * OC; }

void matmul_backward(float* dinp, float* dweight, float* dbias, float* scratch, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC,
                     cudaStream_t stream) {
  linear_backward("matmul_backward", CUDA_R_32F, dinp, dweight, dbias, scratch, dout, dout, inp,
                  weight, N, C, OC, stream);
}

void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias, float* scratch,
                           const float* dout, const uint16_t* dout16, const uint16_t* inp16,
                           const uint16_t* weight16, int N, int C, int OC, cudaStream_t stream) {
  linear_backward("matmul_backward_16bit", cuda_type(dt), dinp, dweight, dbias, scratch, dout,
                  dout16, inp16, weight16, N, C, OC, stream);
}

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, cudaStream_t stream) {
  run(Gemm{"gemm", trans_a, trans_b, M, N, K, CUDA_R_32F, alpha, beta, A, lda, B, ldb, C, ldc},
      stream);
}

void gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, int64_t stride_a, const float* B, int ldb, int64_t stride_b,
                  float beta, float* C, int ldc, int64_t stride_c, int batch,
                  cudaStream_t stream) {
  Gemm g{"gemm_batched", trans_a, trans_b, M, N, K, CUDA_R_32F, alpha, beta,
         A, lda, B, ldb, C, ldc};
  g.batch = batch;
  g.stride_a = stride_a;
  g.stride_b = stride_b;
  g.stride_c = stride_c;
  run(g, stream);
}

void release_cublaslt() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_lt.handle) cublasLtDestroy(g_lt.handle);
  device_free(g_lt.workspace);
  g_lt = LtState{};
}

}  // namespace tessera::kernels::cuda
