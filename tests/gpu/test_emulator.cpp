// The CUDA emulator itself (kernels/cuda/emulator): barriers, shuffles, shared memory, and
// the faults it must turn into failed launches instead of hangs. Only in the emulated
// build: these kernels are defined here, in a file the C++ compiler compiles.
#ifdef TESSERA_CUDA_EMULATOR
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "kernels/cuda/device_math.cuh"

namespace tessera::kernels::cuda {
namespace {

// out[block] = sum of in over the block's threads; every thread checks it got the same.
__global__ void block_sum_kernel(float* out, int* disagreements, const float* in) {
  __shared__ float scratch[32];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float total = block_sum(in[i], scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
  __syncthreads();
  if (total != out[blockIdx.x]) atomicAdd(disagreements, 1);
}

TEST(CudaEmulator, BlockSumAcrossWarpsAndBlocks) {
  const int blocks = 3, threads = 256;
  std::vector<float> in(blocks * threads);
  std::iota(in.begin(), in.end(), 1.0f);
  auto d_in = DeviceArray<float>::from_host(in);
  DeviceArray<float> d_out(blocks);
  DeviceArray<int> d_bad(1);
  launch("block_sum_kernel", {}, block_sum_kernel, dim3(blocks), dim3(threads), 0, nullptr,
         d_out.data(), d_bad.data(), d_in.data());
  const auto out = d_out.download();
  for (int b = 0; b < blocks; b++) {
    const float first = 1.0f + b * threads, last = first + threads - 1;
    EXPECT_EQ(out[b], (first + last) * threads / 2) << "block " << b;
  }
  EXPECT_EQ(d_bad.download()[0], 0);
}

// out[i] = the value of lane src(i) for each shuffle flavour.
__global__ void shuffle_kernel(int* out_xor, int* out_down, int* out_up, int* out_idx,
                               unsigned* out_ballot) {
  const int lane = threadIdx.x % 32;
  const int v = 100 * (threadIdx.x / 32) + lane;
  out_xor[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, v, 5);
  out_down[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, v, 3, 16);
  out_up[threadIdx.x] = __shfl_up_sync(0xFFFFFFFFu, v, 2);
  out_idx[threadIdx.x] = __shfl_sync(0xFFFFFFFFu, v, 7);
  out_ballot[threadIdx.x] = __ballot_sync(0xFFFFFFFFu, lane % 3 == 0);
}

TEST(CudaEmulator, ShufflesFollowCudaSemantics) {
  const int threads = 64;
  DeviceArray<int> x(threads), down(threads), up(threads), idx(threads);
  DeviceArray<unsigned> ballot(threads);
  launch("shuffle_kernel", {}, shuffle_kernel, dim3(1), dim3(threads), 0, nullptr, x.data(),
         down.data(), up.data(), idx.data(), ballot.data());
  const auto hx = x.download(), hdown = down.download(), hup = up.download(),
             hidx = idx.download();
  unsigned every_third = 0;
  for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
  for (int t = 0; t < threads; t++) {
    const int warp = t / 32, lane = t % 32, base = 100 * warp;
    EXPECT_EQ(hx[t], base + (lane ^ 5)) << t;
    // width 16: lanes whose source leaves their 16-lane segment keep their own value
    EXPECT_EQ(hdown[t], base + ((lane % 16) + 3 < 16 ? lane + 3 : lane)) << t;
    EXPECT_EQ(hup[t], base + (lane >= 2 ? lane - 2 : lane)) << t;
    EXPECT_EQ(hidx[t], base + 7) << t;
    EXPECT_EQ(ballot.download()[t], every_third) << t;
  }
}

// Threads 0..15 wait at the block barrier while the rest of their warp waits at a warp
// barrier: neither is ever complete (on a GPU, a hang or undefined behaviour).
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncwarp();
  }
}

TEST(CudaEmulator, DeadlockIsAFailedLaunchNotAHang) {
  DeviceArray<int> out(64);
  try {
    launch("divergent_barrier_kernel", {{"N", 64}}, divergent_barrier_kernel, dim3(1), dim3(64),
           0, nullptr, out.data());
    FAIL() << "the deadlock was not reported";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("divergent_barrier_kernel (N=64)"), std::string::npos) << what;
    EXPECT_NE(what.find("deadlock"), std::string::npos) << what;
  }
}

__global__ void nothing_kernel() {}

TEST(CudaEmulator, BadLaunchShapeIsNamed) {
  try {
    launch("nothing_kernel", {{"T", 7}}, nothing_kernel, dim3(1), dim3(2048), 0, nullptr);
    FAIL() << "a 2048-thread block was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing_kernel (T=7)"), std::string::npos) << e.what();
  }
  // The error is not sticky: the next launch works.
  EXPECT_NO_THROW(launch("nothing_kernel", {}, nothing_kernel, dim3(2), dim3(32), 0, nullptr));
}

// Reverses each block's slice through dynamic shared memory; threads that exit early
// (the tail of the last warp) must not block the barrier.
__global__ void reverse_kernel(float* out, const float* in, int n) {
  float* tile = dynamic_shared_memory<float>();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  tile[threadIdx.x] = in[i];
  __syncthreads();
  const int count = min((int)blockDim.x, n - (int)(blockIdx.x * blockDim.x));
  out[i] = tile[count - 1 - threadIdx.x];
}

TEST(CudaEmulator, DynamicSharedMemoryAndEarlyExits) {
  const int n = 100, threads = 64;
  std::vector<float> in(n);
  std::iota(in.begin(), in.end(), 0.0f);
  auto d_in = DeviceArray<float>::from_host(in);
  DeviceArray<float> d_out(n);
  launch("reverse_kernel", {}, reverse_kernel, dim3(2), dim3(threads), threads * sizeof(float),
         nullptr, d_out.data(), d_in.data(), n);
  const auto out = d_out.download();
  for (int i = 0; i < 64; i++) EXPECT_EQ(out[i], 63 - i);
  for (int i = 64; i < n; i++) EXPECT_EQ(out[i], 64 + (n - 1 - i));
}

// Each thread reads its left neighbour's shared-memory value without a barrier between
// the write and the read: a race the emulator must expose (the value read is the 0xFF
// garbage, a NaN) in at least one of the blocks, whichever order the threads run in.
__global__ void missing_barrier_kernel(float* out) {
  float* tile = dynamic_shared_memory<float>();
  tile[threadIdx.x] = (float)threadIdx.x;
  // a __syncthreads() belongs here
  out[blockIdx.x * blockDim.x + threadIdx.x] = tile[(threadIdx.x + blockDim.x - 1) % blockDim.x];
}

TEST(CudaEmulator, MissingBarrierIsExposed) {
  const int threads = 64;
  DeviceArray<float> out(2 * threads);
  launch("missing_barrier_kernel", {}, missing_barrier_kernel, dim3(2), dim3(threads),
         threads * sizeof(float), nullptr, out.data());
  int garbage = 0;
  for (float v : out.download()) garbage += std::isnan(v);
  EXPECT_GT(garbage, 0) << "the race read only values that were already written";
}

}  // namespace
}  // namespace tessera::kernels::cuda
#endif  // TESSERA_CUDA_EMULATOR
