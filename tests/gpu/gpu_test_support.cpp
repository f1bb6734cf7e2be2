#include "tests/gpu/gpu_test_support.h"

#include <cmath>
#include <cstdlib>

namespace tessera::gpu_test {

std::string why_no_gpu() {
#ifdef TESSERA_CUDA_EMULATOR
  return "";
#else
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it, so that no later check reports it
    return cudaGetErrorString(err);
  }
  return count > 0 ? "" : "the CUDA runtime found no device";
#endif
}

bool small_shapes() {
#ifdef TESSERA_CUDA_EMULATOR
  return true;
#else
  const char* small = std::getenv("TESSERA_GPU_TEST_SMALL");
  return small && std::string(small) == "1";
#endif
}

std::vector<float> random_floats(int64_t n, uint64_t seed, float lo, float hi) {
  const CounterRng rng(seed, "gpu_test");
  std::vector<float> out((size_t)n);
  for (int64_t i = 0; i < n; i++) out[(size_t)i] = lo + (hi - lo) * rng.uniform((uint64_t)i);
  return out;
}

std::vector<int32_t> random_tokens(int64_t n, uint64_t seed, int vocab) {
  const CounterRng rng(seed, "gpu_test_tokens");
  std::vector<int32_t> out((size_t)n);
  for (int64_t i = 0; i < n; i++)
    out[(size_t)i] = std::min(vocab - 1, (int32_t)(rng.uniform((uint64_t)i) * (float)vocab));
  return out;
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += (double)x * x;
  return v.empty() ? 1.0 : std::sqrt(s / (double)v.size()) + 1e-30;
}

void encoder_backward_on_buckets(float* d_dwte, float* d_dwpe, const float* d_dout,
                                 const kernels::cuda::TokenBuckets& buckets, int B, int T, int C) {
  auto d_tokens = DeviceArray<int32_t>::from_host(buckets.bucket_tokens);
  auto d_start = DeviceArray<int32_t>::from_host(buckets.bucket_start);
  auto d_positions = DeviceArray<int32_t>::from_host(buckets.positions);
  kernels::cuda::encoder_backward(d_dwte, d_dwpe, d_dout, d_tokens.data(), d_start.data(),
                                  d_positions.data(), (int)buckets.bucket_tokens.size(), B, T,
                                  C, nullptr);
  kernels::cuda::check_cuda(cudaDeviceSynchronize(), "encoder_backward");
}

Mismatch compare(const std::vector<float>& got, const std::vector<float>& want, double floor) {
  Mismatch m;
  if (got.size() != want.size()) {
    m.max_error = INFINITY;
    return m;
  }
  for (size_t i = 0; i < got.size(); i++) {
    const double err = std::fabs((double)got[i] - (double)want[i]) / (std::fabs((double)want[i]) + floor);
    if (!(err <= m.max_error)) {  // also catches NaN
      m.max_error = std::isnan(err) ? INFINITY : err;
      m.worst_index = (int64_t)i;
      m.got = got[i];
      m.want = want[i];
      if (std::isnan(err)) return m;
    }
  }
  return m;
}

kernels::Buffer<float> on_device(kernels::Backend& be, const std::vector<float>& host) {
  kernels::Buffer<float> b = be.allocate<float>((int64_t)host.size());
  be.to_device(b.data(), host.data(), (int64_t)host.size());
  return b;
}

std::vector<float> on_host(kernels::Backend& be, const kernels::Buffer<float>& b, int64_t n) {
  std::vector<float> host((size_t)n);
  be.to_host(host.data(), b.data(), n);
  return host;
}

std::ostream& operator<<(std::ostream& os, const AttentionShape& s) {
  return os << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH
            << " HS=" << s.C / s.NH;
}

}  // namespace tessera::gpu_test
