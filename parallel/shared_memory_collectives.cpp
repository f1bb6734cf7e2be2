#include "parallel/shared_memory_collectives.h"

#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>

#include "parallel/mpi_error.h"

namespace tessera {
namespace {

void check(int rc, const char* what) { mpi_check(rc, "SharedMemoryCollectives", what); }

// The flags sit in the first 4 KiB of each rank's segment, from its first 64-byte
// boundary (Open MPI places segments only 8-byte aligned); the data follows.
constexpr int64_t kHeaderBytes = 4096;
constexpr int64_t kAlignSlack = 64;
char* align64(char* p) {
  return reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(p) + 63) & ~std::uintptr_t{63});
}
constexpr int64_t kLine = 16;     // floats per cache line: slices start on line boundaries
constexpr int64_t kBlock = 64;    // floats summed at a time (4 cache lines, in registers)

// Spin a little (the peer is usually close), then give the core away: ranks may
// outnumber cores, and the peer we wait for may need ours. Every so often let MPI progress
// (MPI_Iprobe runs its progress engine): a message this rank has in flight elsewhere —
// a pipeline send the peer's stage waits for — must not stall while we wait here.
void back_off(int& spins, MPI_Comm comm) {
  ++spins;
  if (spins % 64 == 0) {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, MPI_STATUS_IGNORE);
  }
  if (spins < 200) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();  // a spin-wait hint: frees the core's resources for a hyperthread sibling
#endif
  } else if (spins < 2000)
    sched_yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(20));
}

}  // namespace

struct SharedMemoryCollectives::Flags {
  alignas(64) std::atomic<uint64_t> arrived{0};
  alignas(64) std::atomic<uint64_t> reduced{0};
  // The operation this rank announced with `arrived` (checked against the others').
  alignas(64) int64_t offset = 0, count = 0;
  int kind = 0;
};

bool SharedMemoryCollectives::node_local(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  int rank = 0, size = 0, node_size = 0;
  check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type");
  check(MPI_Comm_size(node, &node_size), "MPI_Comm_size");
  MPI_Comm_free(&node);
  int all = node_size == size ? 1 : 0;  // every rank sees the same answer
  check(MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  return all == 1;
}

std::string SharedMemoryCollectives::why_not(MPI_Comm comm, int64_t count) {
  int size = 0;
  check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  const double need_mib = (double)size * (kAlignSlack + kHeaderBytes + 4.0 * count) / (1 << 20);
  struct statvfs fs {};
  double free_mib = statvfs("/dev/shm", &fs) == 0 ? (double)fs.f_bavail * fs.f_frsize / (1 << 20) : 0;
  // Every rank must agree: the smallest free space counts.
  check(MPI_Allreduce(MPI_IN_PLACE, &free_mib, 1, MPI_DOUBLE, MPI_MIN, comm), "MPI_Allreduce");
  if (free_mib >= need_mib + 64) return {};
  return "/dev/shm has " + std::to_string((long long)free_mib) + " MiB free, " +
         std::to_string((long long)need_mib + 64) + " MiB needed";
}

SharedMemoryCollectives::SharedMemoryCollectives(MPI_Comm comm, int64_t count)
    : comm_(comm), count_(count) {
  check(MPI_Comm_rank(comm, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm, &size_), "MPI_Comm_size");
  MPI_Info info;
  check(MPI_Info_create(&info), "MPI_Info_create");
  // Each rank's segment on its own pages (placed near the rank that writes it first).
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  char* mine = nullptr;
  const int rc = MPI_Win_allocate_shared(kAlignSlack + kHeaderBytes + 4 * count, 1, info, comm,
                                         &mine, &win_);
  MPI_Info_free(&info);
  check(rc, "MPI_Win_allocate_shared");
  segments_.resize(size_);
  for (int q = 0; q < size_; ++q) {
    MPI_Aint bytes = 0;
    int disp = 0;
    check(MPI_Win_shared_query(win_, q, &bytes, &disp, &segments_[q]), "MPI_Win_shared_query");
    segments_[q] = align64(segments_[q]);
  }
  new (segments_[rank_]) Flags();
  data_ = reinterpret_cast<float*>(segments_[rank_] + kHeaderBytes);
  std::memset(data_, 0, sizeof(float) * count);
  check(MPI_Barrier(comm), "MPI_Barrier");  // every rank's flags exist before any op
}

SharedMemoryCollectives::~SharedMemoryCollectives() {
  if (win_ != MPI_WIN_NULL && std::uncaught_exceptions() == 0) MPI_Win_free(&win_);
}

SharedMemoryCollectives::Flags& SharedMemoryCollectives::flags(int rank) const {
  static_assert(sizeof(Flags) <= kHeaderBytes);
  return *reinterpret_cast<Flags*>(segments_[rank]);
}

SharedMemoryCollectives::Op SharedMemoryCollectives::start(Kind kind, const float* buf, int64_t n,
                                                 float* recv) {
  if (!covers(buf, n))
    throw std::logic_error("SharedMemoryCollectives: buffer outside the shared segment");
  if (kind != Kind::all_reduce && n % size_ != 0)
    throw std::logic_error("SharedMemoryCollectives: reduce_scatter / all_gather count not a "
                           "multiple of the ranks");
  Op op{kind, buf - data_, n, recv, ++issued_, 0};
  Flags& me = flags(rank_);
  me.offset = op.offset;
  me.count = op.count;
  me.kind = (int)kind;
  me.arrived.store(op.number, std::memory_order_release);  // our input is final
  return op;
}

bool SharedMemoryCollectives::all_reached(Op& op, bool reduced_flag, bool block) const {
  for (int q = 0, spins = 0; q < size_; ++q) {
    const Flags& f = flags(q);
    const auto& flag = reduced_flag ? f.reduced : f.arrived;
    while (flag.load(std::memory_order_acquire) < op.number) {
      if (!block) return false;
      back_off(spins, comm_);
    }
    if (!reduced_flag && (f.offset != op.offset || f.count != op.count || f.kind != (int)op.kind))
      throw std::logic_error("SharedMemoryCollectives: rank " + std::to_string(q) +
                             " issued a different operation (collectives out of order)");
  }
  return true;
}

// Sums this rank's slice of every rank's buffer, in rank order, and writes the sum back to
// every buffer (all-reduce) or to recv (reduce-scatter); or copies this rank's slice into
// every other buffer (all-gather).
void SharedMemoryCollectives::run_slice(const Op& op) {
  int64_t lo, hi;
  if (op.kind != Kind::all_reduce) {
    const int64_t m = op.count / size_;
    lo = rank_ * m, hi = lo + m;
  } else {
    const int64_t per = ((op.count + size_ - 1) / size_ + kLine - 1) / kLine * kLine;
    lo = std::min(op.count, rank_ * per), hi = std::min(op.count, lo + per);
  }
  std::vector<float*> bufs(size_);
  for (int q = 0; q < size_; ++q)
    bufs[q] = reinterpret_cast<float*>(segments_[q] + kHeaderBytes) + op.offset;
  if (op.kind == Kind::all_gather) {
    for (int q = 0; q < size_; ++q)
      if (q != rank_) std::memcpy(bufs[q] + lo, bufs[rank_] + lo, sizeof(float) * (hi - lo));
    return;
  }
  // A block of kBlock floats is summed in registers and stored straight away: one pass,
  // each input line read once and each output line written once (no staging buffer to
  // copy out: that costs a quarter of the bandwidth, docs/performance.md).
  for (int64_t c = lo; c < hi; c += kBlock) {
    const int n = (int)std::min(kBlock, hi - c);
    float sum[kBlock];
    const float* __restrict b0 = bufs[0] + c;
    for (int i = 0; i < n; ++i) sum[i] = b0[i];
    for (int q = 1; q < size_; ++q) {
      const float* __restrict b = bufs[q] + c;
      for (int i = 0; i < n; ++i) sum[i] += b[i];
    }
    if (op.kind == Kind::reduce_scatter) {
      float* __restrict out = op.recv + (c - lo);
      for (int i = 0; i < n; ++i) out[i] = sum[i];
    } else {
      for (int q = 0; q < size_; ++q) {
        float* __restrict out = bufs[q] + c;
        for (int i = 0; i < n; ++i) out[i] = sum[i];
      }
    }
  }
}

bool SharedMemoryCollectives::advance(Op& op, bool block) {
  if (op.stage == 0) {
    if (!all_reached(op, /*reduced_flag=*/false, block)) return false;
    run_slice(op);
    flags(rank_).reduced.store(op.number, std::memory_order_release);
    op.stage = 1;
  }
  if (op.stage == 1) {
    if (!all_reached(op, /*reduced_flag=*/true, block)) return false;
    op.stage = 2;
  }
  return true;
}

}  // namespace tessera
