// cuda_status(): the CUDA runtime's view of the machine. Host code only, no kernels; its
// own library (tessera_cuda_device), so that the kernels and their test binaries do not
// link cuDNN and NCCL just to print their versions.
#include "kernels/cuda/device.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#ifdef TESSERA_HAVE_CUDNN
#include <cudnn.h>
#endif
#ifdef TESSERA_HAVE_NCCL
#include <nccl.h>
#endif

namespace tessera::cuda {

CudaStatus cuda_status() {
  CudaStatus status;

  // Both version queries work without a GPU or driver, so fill them in first: a user
  // reading `tessera doctor` on a login node still learns what the binary was built with.
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) status.runtime_version = runtime;
  status.cublaslt_version = static_cast<int>(cublasLtGetVersion());
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess) status.driver_version = driver;
#ifdef TESSERA_HAVE_CUDNN
  status.cudnn_version = static_cast<int>(cudnnGetVersion());
#endif
#ifdef TESSERA_HAVE_NCCL
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) status.nccl_version = nccl;
#endif

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
