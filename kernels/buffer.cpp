#include "kernels/buffer.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "framework/util/error.h"  // header-only; base/error.h once it moves there

namespace tessera::kernels {

const char* to_string(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

namespace buffer_detail {
namespace {

constexpr std::size_t kHuge = std::size_t{2} << 20;

// madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of [p, p + bytes), best effort;
// TESSERA_HUGE_PAGES=0 turns it off (as for parallel/huge_pages.h, whose collapse
// variant serves memory already touched).
void advise_huge_pages(void* p, std::size_t bytes) {
#ifdef MADV_HUGEPAGE
  if (const char* e = std::getenv("TESSERA_HUGE_PAGES"); e && std::strcmp(e, "0") == 0) return;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t lo = (a + kHuge - 1) & ~(kHuge - 1), hi = (a + bytes) & ~(kHuge - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

}  // namespace

void* allocate_zeroed(std::size_t n_bytes, Device device, Pages pages, std::size_t* alignment) {
  if (device != Device::cpu) throw Error("CUDA buffers are not built yet");
  // 64-byte alignment: every tensor in the buffer starts on a cache line.
  const bool huge = pages == Pages::huge_when_large && n_bytes >= 2 * kHuge;
  const std::size_t align = huge ? kHuge : 64;
  const std::size_t bytes = (n_bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes > 0 ? bytes : align);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes >> 20) + " MiB");
  if (huge) advise_huge_pages(p, bytes);
  std::memset(p, 0, bytes);
  *alignment = align;
  return p;
}

void release(void* p, Device) { std::free(p); }

}  // namespace buffer_detail
}  // namespace tessera::kernels
