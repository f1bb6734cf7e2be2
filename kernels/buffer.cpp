#include "kernels/buffer.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.h"
#include "base/huge_pages.h"

namespace tessera::kernels {

const char* to_string(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

namespace {
DeviceMemory g_cuda_memory;  // installed by the CUDA backend
}  // namespace

void install_device_memory(Device device, DeviceMemory memory) {
  if (device == Device::cpu) throw Error("install_device_memory: the CPU's memory is built in");
  g_cuda_memory = memory;
}

namespace buffer_detail {

constexpr std::size_t kHuge = std::size_t{2} << 20;

void* allocate_zeroed(std::size_t n_bytes, Device device, Pages pages, std::size_t* alignment) {
  if (device != Device::cpu) {
    if (!g_cuda_memory.allocate_zeroed)
      throw Error("a CUDA buffer was asked for before the CUDA backend was set up (or in a "
                  "build without it)");
    *alignment = 256;  // cudaMalloc's
    return g_cuda_memory.allocate_zeroed(n_bytes);
  }
  // 64-byte alignment: every tensor in the buffer starts on a cache line.
  const bool huge = pages == Pages::huge_when_large && n_bytes >= 2 * kHuge;
  const std::size_t align = huge ? kHuge : 64;
  const std::size_t bytes = (n_bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes > 0 ? bytes : align);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes >> 20) + " MiB");
  if (huge) advise_huge_pages(p, bytes, /*collapse=*/false);
  std::memset(p, 0, bytes);
  *alignment = align;
  return p;
}

void release(void* p, Device device) {
  if (device == Device::cpu) std::free(p);
  else if (g_cuda_memory.release) g_cuda_memory.release(p);
}

}  // namespace buffer_detail
}  // namespace tessera::kernels
