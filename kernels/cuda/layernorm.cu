// LayerNorm on the GPU (kernels/cuda/ops.h: layernorm_forward, residual_layernorm_forward,
// layernorm_backward_scratch, layernorm_backward), with the CPU twin's formulas
// (kernels/cpu/layernorm.cpp): two-pass mean and biased variance, eps = 1e-5,
// rstd = 1 / sqrt(var + eps).
//
// Forward: one warp per row (its 32 lanes stride over the C columns, so every load is
// coalesced); warp_sum gives each lane the row's sums without shared memory. The row is
// read once per pass and stays in L1/L2 between the passes.
//   layernorm_forward_kernel<Residual>: grid ceil(N/8), block 256 (8 rows), no smem.
//   With Residual, the row is a + b, written to `residual` in the first pass and read back
//   by the same lanes in the next ones (the fused residual add saves a kernel and a read).
//
// Backward: dinp per row, one warp per row, as the forward.
//   layernorm_backward_dinp_kernel: grid ceil(N/8), block 256, no smem.
// dweight and dbias are sums over rows: a two-pass deterministic reduction, no atomics.
//   layernorm_backward_partials_kernel: grid (G = ceil(N/32), ceil(C/256)), block 256, no
//     smem: block (g, y) sums rows [32g, 32g+32) of columns [256y, 256y+256), one column
//     per thread, into scratch[g][0..C) (dweight) and scratch[g][C..2C) (dbias).
//   layernorm_backward_reduce_kernel: grid ceil(C/32), block 256 (32 columns x 8 row-groups
//     of partials), smem 2 KiB static: each of the 8 threads of a column adds every 8th
//     partial, then the first adds those 8 in order and adds the total into dweight/dbias.
// The order of every addition is a function of (N, C) alone: the same bits every run.
#include "base/error.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = 8;          // one warp per row, 256 threads
constexpr int kRowsPerPartial = 32;       // rows summed by one block of the partials kernel
constexpr int kPartialThreads = 256;      // columns per block of the partials kernel
constexpr int kReduceColumns = 32;        // columns per block of the reduce kernel
constexpr int kReduceGroups = 8;          // threads adding one column's partials
}  // namespace

// out = layernorm(x) for row = blockIdx.x * 8 + warp, x = a (or a + b, saved to residual).
template <bool Residual>
__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, float* residual,
                                         const float* a, const float* b, const float* weight,
                                         const float* bias, int N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // the whole warp leaves: no shuffle is left half-reached
  const int64_t base = (int64_t)row * C;
  const float* x = Residual ? residual + base : a + base;

  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    float xc;
    if constexpr (Residual) {
      xc = a[base + c] + b[base + c];
      residual[base + c] = xc;
    } else {
      xc = x[c];
    }
    sum += xc;
  }
  const float m = warp_sum(sum) / (float)C;

  float var = 0.0f;  // two passes: E[x^2] - E[x]^2 would lose digits in fp32
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = x[c] - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / (float)C + kEps);

  float* o = out + base;
  for (int c = lane; c < C; c += kWarpSize) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp[row] += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * weight.
__global__ void layernorm_backward_dinp_kernel(float* dinp, const float* dout, const float* inp,
                                               const float* weight, const float* mean,
                                               const float* rstd, int N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;
  const int64_t base = (int64_t)row * C;
  const float* x = inp + base;
  const float* d = dout + base;
  const float m = mean[row], s = rstd[row];

  float dnorm_sum = 0.0f, dnorm_xhat_sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float xhat = (x[c] - m) * s;
    const float dnorm = d[c] * weight[c];
    dnorm_sum += dnorm;
    dnorm_xhat_sum += dnorm * xhat;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / (float)C;
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / (float)C;

  float* dx = dinp + base;
  for (int c = lane; c < C; c += kWarpSize) {
    const float xhat = (x[c] - m) * s;
    const float dnorm = d[c] * weight[c];
    dx[c] += s * (dnorm - dnorm_mean - xhat * dnorm_xhat_mean);
  }
}

// scratch[g][c] = sum over rows n of group g of dout * (x - mean) * rstd; scratch[g][C + c]
// = the sum of dout (the CPU's per-row terms, summed in row order).
__global__ void layernorm_backward_partials_kernel(float* scratch, const float* dout,
                                                   const float* inp, const float* mean,
                                                   const float* rstd, int N, int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int g = blockIdx.x;
  const int n_end = min(N, (g + 1) * kRowsPerPartial);
  float dw = 0.0f, db = 0.0f;
  for (int n = g * kRowsPerPartial; n < n_end; n++) {
    const float d = dout[(int64_t)n * C + c];
    dw += d * (inp[(int64_t)n * C + c] - mean[n]) * rstd[n];
    db += d;
  }
  scratch[(int64_t)g * 2 * C + c] = dw;
  scratch[(int64_t)g * 2 * C + C + c] = db;
}

// dweight[c] += sum over g of scratch[g][c], dbias[c] += sum of scratch[g][C + c]: thread
// (x, y) of the block (x = column within the block's 32, y = 0..7) adds g = y, y+8, ...;
// then y = 0 adds the 8 results in order.
__global__ void layernorm_backward_reduce_kernel(float* dweight, float* dbias,
                                                 const float* scratch, int G, int C) {
  __shared__ float dw_part[kReduceGroups][kReduceColumns];
  __shared__ float db_part[kReduceGroups][kReduceColumns];
  const int x = threadIdx.x % kReduceColumns, y = threadIdx.x / kReduceColumns;
  const int c = blockIdx.x * kReduceColumns + x;
  float dw = 0.0f, db = 0.0f;
  if (c < C) {
    for (int g = y; g < G; g += kReduceGroups) {
      dw += scratch[(int64_t)g * 2 * C + c];
      db += scratch[(int64_t)g * 2 * C + C + c];
    }
  }
  dw_part[y][x] = dw;
  db_part[y][x] = db;
  __syncthreads();
  if (y == 0 && c < C) {
    float dw_total = dw_part[0][x], db_total = db_part[0][x];
    for (int k = 1; k < kReduceGroups; k++) {
      dw_total += dw_part[k][x];
      db_total += db_part[k][x];
    }
    dweight[c] += dw_total;
    dbias[c] += db_total;
  }
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  launch("layernorm_forward", {{"N", N}, {"C", C}}, layernorm_forward_kernel<false>,
         dim3((unsigned)ceil_div(N, kRowsPerBlock)), dim3(kRowsPerBlock * kWarpSize), 0, stream,
         out, mean, rstd, static_cast<float*>(nullptr), inp, static_cast<const float*>(nullptr),
         weight, bias, N, C);
}

void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd,
                                const float* a, const float* b, const float* weight,
                                const float* bias, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  launch("residual_layernorm_forward", {{"N", N}, {"C", C}}, layernorm_forward_kernel<true>,
         dim3((unsigned)ceil_div(N, kRowsPerBlock)), dim3(kRowsPerBlock * kWarpSize), 0, stream,
         out, mean, rstd, residual, a, b, weight, bias, N, C);
}

int64_t layernorm_backward_scratch(int N, int C) {
  return ceil_div(N, kRowsPerPartial) * 2 * (int64_t)C;
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  check((dweight == nullptr) == (dbias == nullptr),
        "layernorm_backward: dweight and dbias must be both given or both null");
  if (N == 0) return;
  launch("layernorm_backward_dinp", {{"N", N}, {"C", C}}, layernorm_backward_dinp_kernel,
         dim3((unsigned)ceil_div(N, kRowsPerBlock)), dim3(kRowsPerBlock * kWarpSize), 0, stream,
         dinp, dout, inp, weight, mean, rstd, N, C);
  if (dweight == nullptr && dbias == nullptr) return;  // frozen (LoRA): only dinp is wanted
  const int G = (int)ceil_div(N, kRowsPerPartial);
  launch("layernorm_backward_partials", {{"N", N}, {"C", C}}, layernorm_backward_partials_kernel,
         dim3((unsigned)G, (unsigned)ceil_div(C, kPartialThreads)), dim3(kPartialThreads), 0,
         stream, scratch, dout, inp, mean, rstd, N, C);
  launch("layernorm_backward_reduce", {{"N", N}, {"C", C}}, layernorm_backward_reduce_kernel,
         dim3((unsigned)ceil_div(C, kReduceColumns)), dim3(kReduceColumns * kReduceGroups), 0,
         stream, dweight, dbias, scratch, G, C);
}

}  // namespace tessera::kernels::cuda
