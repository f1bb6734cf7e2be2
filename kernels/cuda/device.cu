// cuda_status(): the CUDA runtime's view of the machine. Host code only, no kernels.
// Kept C++17 and free of Eigen (nvcc does not take C++20 from
// CMake 3.25, and Eigen floods nvcc with warnings).
#include "kernels/cuda/device.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace tessera::cuda {

CudaStatus cuda_status() {
  CudaStatus status;

  // Both version queries work without a GPU or driver, so fill them in first: a user
  // reading `tessera doctor` on a login node still learns what the binary was built with.
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) status.runtime_version = runtime;
  status.cublaslt_version = static_cast<int>(cublasLtGetVersion());

  // On a machine without a GPU this fails (cudaErrorInsufficientDriver, or
  // cudaErrorNoDevice / a stub-library error): any error means "no GPU", and its text is
  // the most useful reason we can give.
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    status.reason = cudaGetErrorString(err);
    cudaGetLastError();  // clear the error so later CUDA calls do not report it again
    return status;
  }
  if (count == 0) {
    status.reason = "the CUDA runtime found no device";
    return status;
  }

  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      // One broken device should not hide the others; say which one failed.
      status.reason += "device " + std::to_string(i) + ": " + cudaGetErrorString(err) + "; ";
      cudaGetLastError();
      continue;
    }
    CudaDevice d;
    d.index = i;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.memory_bytes = prop.totalGlobalMem;
    status.devices.push_back(d);
  }
  status.available = !status.devices.empty();
  if (status.available) status.reason.clear();
  return status;
}

}  // namespace tessera::cuda
