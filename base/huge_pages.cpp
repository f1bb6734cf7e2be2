#include "base/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older glibc headers lack it
#endif

namespace tessera {

bool advise_huge_pages(void* p, std::size_t bytes, bool collapse) {
#ifdef MADV_HUGEPAGE
  if (const char* e = std::getenv("TESSERA_HUGE_PAGES"); e && std::strcmp(e, "0") == 0) return false;
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t lo = (a + kHuge - 1) & ~(kHuge - 1), hi = (a + bytes) & ~(kHuge - 1);
  if (p == nullptr || hi <= lo) return false;
  if (madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE) != 0) return false;
  if (collapse) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_COLLAPSE);
  return true;
#else
  (void)p, (void)bytes, (void)collapse;
  return false;
#endif
}

}  // namespace tessera
