#include "kernels/buffer.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.h"
#include "base/huge_pages.h"

namespace tessera::kernels {

const char* to_string(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

namespace buffer_detail {

constexpr std::size_t kHuge = std::size_t{2} << 20;

void* allocate_zeroed(std::size_t n_bytes, Device device, Pages pages, std::size_t* alignment) {
  if (device != Device::cpu) throw Error("CUDA buffers are not built yet");
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

void release(void* p, Device) { std::free(p); }

}  // namespace buffer_detail
}  // namespace tessera::kernels
