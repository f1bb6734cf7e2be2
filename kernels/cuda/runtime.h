// The CUDA runtime as the GPU kernels and their callers see it: the runtime and cuBLASLt
// headers (or, in the emulated build, kernels/cuda/emulator/cuda_emulator.h, which runs
// the same kernel source on the CPU), error checks that name what failed, and DeviceArray,
// an owning device allocation with upload and download.
//
// Host code only: plain C++ that the ordinary C++ compiler takes (tests, the trainer).
// Device-side helpers are in kernels/cuda/device_math.cuh.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#ifdef TESSERA_CUDA_EMULATOR
#include "kernels/cuda/emulator/cuda_emulator.h"
#else
#include <cublasLt.h>
#include <cuda_runtime.h>
#endif

namespace tessera::kernels::cuda {

// Throws tessera::Error("CUDA error in <what>: <error string>") unless err is cudaSuccess.
// An error from an earlier asynchronous kernel also names the last kernel launched.
void check_cuda(cudaError_t err, const char* what);
// The same for a cuBLAS / cuBLASLt status.
void check_cublas(cublasStatus_t status, const char* what);

// A named dimension of a kernel launch, for error messages: {"N", 4096}.
struct ShapeArg {
  const char* name;
  int64_t value;
};
// "layernorm_forward (N=4096, C=768)"
std::string describe_kernel(const char* name, std::initializer_list<ShapeArg> shape);
// Records the kernel about to be launched (for the message of a later asynchronous
// error), then, after the launch, checks cudaGetLastError. With TESSERA_CUDA_SYNC=1 in
// the environment every launch is also synchronized, so an error names its own kernel.
void note_launch(const char* name, std::initializer_list<ShapeArg> shape);
void check_launch(const char* name, std::initializer_list<ShapeArg> shape, cudaStream_t stream);

// Out of memory names the bytes asked for, what they were for, and what is free.
void* device_malloc(size_t bytes, const char* what);
void device_free(void* p);

// An owning array of count T in device memory (zeroed), move-only.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(int64_t count, const char* what = "a device array")
      : data_(static_cast<T*>(device_malloc(sizeof(T) * (size_t)count, what))), count_(count) {
    check_cuda(cudaMemset(data_, 0, sizeof(T) * (size_t)count), "cudaMemset");
  }
  // A device copy of host values.
  static DeviceArray from_host(const std::vector<T>& host, const char* what = "a device array") {
    DeviceArray a((int64_t)host.size(), what);
    a.upload(host.data());
    return a;
  }
  DeviceArray(DeviceArray&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(o.count_) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { device_free(data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }
  size_t bytes() const { return sizeof(T) * (size_t)count_; }

  // Copies count() values from host memory to the device, and back (synchronous).
  void upload(const T* host) {
    check_cuda(cudaMemcpy(data_, host, bytes(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  std::vector<T> download() const {
    std::vector<T> host((size_t)count_);
    check_cuda(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost),
               "cudaMemcpy to host");
    return host;
  }

 private:
  T* data_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace tessera::kernels::cuda
