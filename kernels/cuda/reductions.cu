// Reductions over whole arrays on the GPU (kernels/cuda/ops.h: sum_squares_scratch,
// sum_squares, has_nonfinite): the gradient norm's sum of squares and fp16 loss
// scaling's overflow check.
//
// sum_squares: a two-pass deterministic reduction in double. The grid size is a function
// of n alone (at most 1024 blocks), so every element's place in the sum is fixed:
//   sum_squares_partials_kernel: grid G = min(1024, ceil(n / 256)), block 256, smem 256 B
//     static: each thread accumulates x^2 in double over a grid-stride loop, block_sum
//     gives scratch[block].
//   sum_squares_final_kernel: grid 1, block 256, smem 256 B static: thread k adds
//     scratch[k], scratch[k + 256], ...; block_sum; thread 0 writes *result.
// has_nonfinite: the CPU's bit test (exponent all ones: inf or NaN), which fast-math
// flags cannot remove; every thread that finds one stores 1 (all writers store the same
// value, so the race is benign, and *result is read only after the kernel).
//   has_nonfinite_kernel: grid min(1024, ceil(n / 256)), block 256, no smem.
#include <algorithm>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {

namespace {
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;  // about 8 blocks of 256 per SM of an H100: full occupancy

// The partials' grid: a function of n alone, which fixes the order of the sum.
int64_t reduction_blocks(int64_t n) {
  return std::min(kMaxBlocks, std::max<int64_t>(1, ceil_div(n, kThreads)));
}
}  // namespace

// scratch[blockIdx.x] = sum of x[i]^2 (in double) over the block's grid-stride indices.
__global__ void sum_squares_partials_kernel(double* scratch, const float* x, int64_t n) {
  __shared__ double warp_sums[32];
  double acc = 0.0;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double xi = (double)x[i];
    acc += xi * xi;
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) scratch[blockIdx.x] = acc;
}

// *result = the sum of the G partials, in the fixed order given by the block shape.
__global__ void sum_squares_final_kernel(double* result, const double* scratch, int G) {
  __shared__ double warp_sums[32];
  double acc = 0.0;
  for (int k = threadIdx.x; k < G; k += blockDim.x) acc += scratch[k];
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) *result = acc;
}

// *result = 1 if some x[i] has all exponent bits set (inf or NaN).
__global__ void has_nonfinite_kernel(int32_t* result, const float* x, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  bool found = false;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    found |= (__float_as_uint(x[i]) & 0x7F800000u) == 0x7F800000u;
  if (found) *result = 1;
}

int64_t sum_squares_scratch(int64_t n) { return reduction_blocks(n); }

void sum_squares(double* result, double* scratch, const float* x, int64_t n, cudaStream_t stream) {
  const int64_t G = reduction_blocks(n);
  launch("sum_squares_partials", {{"n", n}}, sum_squares_partials_kernel, dim3((unsigned)G),
         dim3(kThreads), 0, stream, scratch, x, n);
  launch("sum_squares_final", {{"n", n}}, sum_squares_final_kernel, dim3(1), dim3(kThreads), 0,
         stream, result, scratch, (int)G);
}

void has_nonfinite(int32_t* result, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch("has_nonfinite", {{"n", n}}, has_nonfinite_kernel, dim3((unsigned)reduction_blocks(n)),
         dim3(kThreads), 0, stream, result, x, n);
}

}  // namespace tessera::kernels::cuda
