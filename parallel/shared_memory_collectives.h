// SharedMemoryCollectives: all-reduce, reduce-scatter and all-gather of buffers that every
// rank of a node can address directly.
//
// Why: the ring all-reduce (parallel/mpi_communicator.h) copies each byte through MPI's
// shared-memory transport (the kernel's CMA copy) and back, about 3x the buffer's size
// in memory traffic per rank. When the buffer itself lives in memory that every rank of
// the node has mapped (an MPI-3 shared-memory window, MPI_Win_allocate_shared), rank r can
// simply sum slice r of every rank's buffer and write the sum back into each of them: each
// rank reads and writes its share of every buffer once, the least traffic an all-reduce
// that leaves p copies can have. NCCL does the same inside a node with registered user
// buffers (ncclMemAlloc / ncclCommRegister).
//
// Every element is summed by exactly one rank, in rank order (buf_0 + buf_1 + ...), and
// the same bits are written to every rank's copy: all ranks end bit-identical. The
// all-gather is the second half alone: rank r copies its slice into every rank's buffer.
//
// Synchronisation (no MPI call on the way, so it can progress inside test()): each rank
// has a cache line of flags in its own segment, written only by itself:
//   arrived = n once its input of operation n is final (release);
//   reduced = n once it has written its slice of operation n where it goes (release).
// Operation n: publish arrived; wait until every rank arrived (acquire), so their inputs
// are final; sum (or copy) this rank's slice; publish reduced; wait until every rank
// reduced, so every slice of this rank's buffer holds its result and no peer still reads
// it. Operations
// are numbered in issue order, which collectives share on every rank. Waits spin briefly,
// then yield the core (ranks may outnumber cores).
//
// A rank that fails mid-run ends the job through MPI_Abort (framework/cli/main.cpp); the
// peers' waits end with it.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

class SharedMemoryCollectives {
 public:
  // Collective over comm, whose ranks must all be on one node (see node_local()), and
  // which must outlive this object. Each rank gets count zeroed floats, 64-byte aligned,
  // at the same offsets on every rank.
  SharedMemoryCollectives(MPI_Comm comm, int64_t count);
  // Frees the window (collective) unless an exception is unwinding the stack: a rank that
  // failed must not wait for peers that will not come.
  ~SharedMemoryCollectives();
  SharedMemoryCollectives(const SharedMemoryCollectives&) = delete;
  SharedMemoryCollectives& operator=(const SharedMemoryCollectives&) = delete;

  // True when every rank of comm shares this node's memory (MPI_COMM_TYPE_SHARED).
  static bool node_local(MPI_Comm comm);
  // Empty when count floats per rank fit the node's shared-memory file system
  // (/dev/shm, where Open MPI backs its windows) on every rank; else why not. Collective.
  static std::string why_not(MPI_Comm comm, int64_t count);

  float* data() { return data_; }
  int64_t count() const { return count_; }
  bool covers(const float* buf, int64_t n) const {
    return buf >= data_ && n >= 0 && buf + n <= data_ + count_;
  }

  enum class Kind { all_reduce, reduce_scatter, all_gather };
  // One operation in flight. all_reduce: buf[0..n) becomes the sum on every rank.
  // reduce_scatter: recv[0..n/p) becomes the sum of slice rank() of buf (n = p * recv
  // count; recv anywhere in this rank's memory, or buf + rank() * n / p).
  // all_gather: slice q of buf[0..n) (n = p * slice) becomes rank q's slice q, on every
  // rank (in place: each rank's own slice is its input).
  struct Op {
    Kind kind = Kind::all_reduce;
    int64_t offset = 0, count = 0;  // of buf in data()
    float* recv = nullptr;          // reduce_scatter
    uint64_t number = 0;
    int stage = 0;                  // 0: waiting for arrivals, 1: waiting for the sums
  };
  Op start(Kind kind, const float* buf, int64_t n, float* recv = nullptr);
  // Advances op; true once complete. block = false returns false as soon as a peer has
  // to be waited for.
  bool advance(Op& op, bool block);

 private:
  struct Flags;
  Flags& flags(int rank) const;
  bool all_reached(Op& op, bool reduced_flag, bool block) const;
  void run_slice(const Op& op);

  MPI_Win win_ = MPI_WIN_NULL;
  MPI_Comm comm_;  // the caller's (waits let MPI progress on it)
  int rank_ = 0, size_ = 1;
  int64_t count_ = 0;
  float* data_ = nullptr;
  std::vector<char*> segments_;  // every rank's segment, as mapped here
  uint64_t issued_ = 0;
};

}  // namespace tessera
