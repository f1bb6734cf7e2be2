// What the CUDA runtime can see: the GPUs, their compute capability and memory, and the
// versions of the driver and of the CUDA runtime, cuBLASLt, cuDNN and NCCL this binary
// was built against.
//
// A plain C++ header with no CUDA types, so that host code compiled by the ordinary C++
// compiler can include it. The definition (device.cu) exists only in CUDA builds: call
// cuda_status() only under `#ifdef TESSERA_HAVE_CUDA` (the tessera_kernels_cuda target
// defines it for everything that links it).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace tessera::cuda {

struct CudaDevice {
  int index = 0;            // the CUDA device ordinal (what cudaSetDevice takes)
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3"
  int major = 0;            // compute capability major, e.g. 9 for sm_90
  int minor = 0;            // compute capability minor
  size_t memory_bytes = 0;  // total global memory
};

struct CudaStatus {
  // True when the runtime reports at least one usable device.
  bool available = false;
  // Why available is false, in words a user can act on (e.g. the cudaGetErrorString of
  // cudaGetDeviceCount's error); empty when available.
  std::string reason;
  std::vector<CudaDevice> devices;
  // cudaRuntimeGetVersion: 1000 * major + 10 * minor, e.g. 13000 for CUDA 13.0.
  int runtime_version = 0;
  // cublasLtGetVersion, e.g. 130001; works without a GPU.
  int cublaslt_version = 0;
  // cudaDriverGetVersion, same encoding as runtime_version; 0 when no driver is installed.
  int driver_version = 0;
  // cudnnGetVersion (e.g. 91900 for 9.19.0) and ncclGetVersion (e.g. 22809 for 2.28.9),
  // both work without a GPU; 0 when the build did not find the library.
  int cudnn_version = 0;
  int nccl_version = 0;
};

// Asks the CUDA runtime. Never throws for "no GPU" or "no driver": that is reported as
// available == false with the reason. Safe to call repeatedly.
CudaStatus cuda_status();

}  // namespace tessera::cuda
