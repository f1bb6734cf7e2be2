// Error checks and device allocation for the GPU kernels (kernels/cuda/runtime.h).
//
// CUDA reports a fault in a kernel asynchronously, at a later call. So every launch
// records its kernel's name and shapes, and an error that surfaces later names the last
// kernel launched ("possibly that one"); TESSERA_CUDA_SYNC=1 synchronizes after each
// launch, which makes the attribution exact at the cost of speed.
#include "kernels/cuda/runtime.h"

#include <cstdlib>
#include <string>

#include "base/error.h"

namespace tessera::kernels::cuda {
namespace {

// The last kernel launched on this host thread, for the messages of asynchronous errors.
thread_local std::string t_last_kernel;

bool sync_every_launch() {
  static const bool sync = [] {
    const char* v = std::getenv("TESSERA_CUDA_SYNC");
    return v && std::string(v) == "1";
  }();
  return sync;
}

std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20) + " MiB"; }

}  // namespace

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky launch error so the next check does not repeat it
  std::string message = std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err);
  if (!t_last_kernel.empty())
    message += " (the last kernel launched was " + t_last_kernel +
               "; run with TESSERA_CUDA_SYNC=1 to name the failing one exactly)";
  throw Error(message);
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusString(status));
}

std::string describe_kernel(const char* name, std::initializer_list<ShapeArg> shape) {
  std::string s = name;
  s += " (";
  bool first = true;
  for (const ShapeArg& a : shape) {
    if (!first) s += ", ";
    s += std::string(a.name) + "=" + std::to_string(a.value);
    first = false;
  }
  return s + ")";
}

void note_launch(const char* name, std::initializer_list<ShapeArg> shape) {
  // Formatting a string per launch costs about a microsecond; a GPT-2 step launches a few
  // hundred kernels, so the name is kept only in the synchronous debugging mode and
  // otherwise formatted when an error needs it.
  if (sync_every_launch()) t_last_kernel = describe_kernel(name, shape);
  else t_last_kernel = name;
}

void check_launch(const char* name, std::initializer_list<ShapeArg> shape, cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && sync_every_launch()) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    t_last_kernel.clear();
    throw Error("CUDA kernel " + describe_kernel(name, shape) + " failed: " +
                cudaGetErrorString(err));
  }
}

void* device_malloc(size_t bytes, const char* what) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw Error("GPU out of memory: " + std::string(what) + " asked for " + mib(bytes) + " with " +
                mib(free_bytes) + " free of " + mib(total_bytes));
  }
  check_cuda(err, what);
  return p;
}

void device_free(void* p) {
  if (p) cudaFree(p);  // errors at free are reported by the next checked call
}

}  // namespace tessera::kernels::cuda
