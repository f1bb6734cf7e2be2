// Transparent huge pages (2 MiB) for large, long-lived buffers such as the flat gradient
// buffer that the data-parallel all-reduce moves every step.
//
// Why: on this machine (Linux 6.x, THP "madvise" mode, Open MPI's vader BTL with CMA
// single-copy) the all-reduce of a 498 MB gradient buffer between 2 ranks is bound by
// memory traffic and by the kernel's per-page work in process_vm_readv; 4 KiB pages cost
// both (TLB misses, pinning 512x more pages). bench/bench_allreduce measures the effect
// (TESSERA_HUGE_PAGES=0 turns this off).
//
// advise_huge_pages(p, bytes): madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of
// [p, p + bytes), then MADV_COLLAPSE (Linux >= 6.1) so that memory already touched is
// backed by huge pages now rather than whenever khugepaged gets to it (about 1.4 s for
// 480 MiB, once). Best effort: contents are unchanged, errors are ignored. Returns false
// when nothing was advised (too small, disabled, or madvise refused).
// Better still: allocate 2 MiB-aligned and advise before the first touch (no collapse).
#pragma once

#include <cstddef>

namespace tessera {

bool advise_huge_pages(void* p, std::size_t bytes, bool collapse = true);

}  // namespace tessera
