// The chunked ring all-reduce of MpiCommunicator (parallel/mpi_communicator.h explains
// when it is used): its wire formats (fp32, bf16), the state of one operation, and the
// steps, shared by the blocking and the queued forms. Internal: included by
// mpi_communicator.cpp only.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "kernels/cpu/cast_bf16.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_error.h"

namespace tessera::mpi_ring {

constexpr int kRingTag = 7001;

inline void check(int rc, const char* what) { mpi_check(rc, "MpiCommunicator", what); }

inline int icount(int64_t n) { return static_cast<int>(n); }

template <class V>
inline void grow(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

// ---------------------------------------------------------------- the ring all-reduce

// What the ring moves and how it adds: T, the element of a message; load() before a
// chunk's first step, store() after its last; wire(), where the chunk's data being reduced
// lives; recv(), where a reduce-scatter step receives; reduce(dst, src, n): dst += src.
struct Fp32Wire {  // the caller's floats themselves
  using T = float;
  static MPI_Datatype type() { return MPI_FLOAT; }
  static void reserve(RingScratch& s, int64_t seg, int64_t /*chunk*/) { grow(s.f32, seg); }
  static void load(const float*, int64_t, RingScratch&) {}
  static void store(float*, int64_t, RingScratch&) {}
  static T* wire(float* chunk, RingScratch&) { return chunk; }
  static T* recv(RingScratch& s) { return s.f32.data(); }
  static void reduce(T* __restrict dst, const T* __restrict src, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  }
};

struct Bf16Wire {  // a bf16 copy of the chunk (rounded once, widened back at the end)
  using T = kernels::bf16;
  static MPI_Datatype type() { return MPI_UINT16_T; }
  static void reserve(RingScratch& s, int64_t seg, int64_t chunk) {
    grow(s.bf16_recv, seg);
    grow(s.bf16_chunk, chunk);
  }
  static void load(const float* chunk, int64_t n, RingScratch& s) {
    kernels::fp32_to_bf16_array(s.bf16_chunk.data(), chunk, n);
  }
  static void store(float* chunk, int64_t n, RingScratch& s) {
    kernels::bf16_to_fp32_array(chunk, s.bf16_chunk.data(), n);
  }
  static T* wire(float*, RingScratch& s) { return s.bf16_chunk.data(); }
  static T* recv(RingScratch& s) { return s.bf16_recv.data(); }
  static void reduce(T* __restrict dst, const T* __restrict src, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = kernels::fp32_to_bf16(kernels::bf16_to_fp32(dst[i]) + kernels::bf16_to_fp32(src[i]));
  }
};

// One ring all-reduce under way (blocking or queued): the buffer goes in chunks of p
// segments of at most chunk_bytes each; a chunk takes p-1 reduce-scatter steps (phase 0)
// then p-1 all-gather steps (phase 1).
struct RingOp {
  float* buf = nullptr;
  int64_t count = 0;
  bool bf16 = false;
  int64_t off = 0;  // the current chunk
  int phase = 0, step = 0;
  bool done() const { return off >= count; }
};

// The ring's messages and reductions, shared by the blocking all-reduce (which waits for
// each step) and the queued one (which tests), so both give the same bits. Segment i of a
// chunk of len elements is [len*i/p, len*(i+1)/p).
//   Phase 0, step s: rank r sends segment r-s to the right and receives segment r-s-1
//     from the left, reducing it into its own; after p-1 steps rank r holds the sum of
//     segment r+1 (segment k is summed in the order k, k+1, ..., k-1).
//   Phase 1, step s: rank r sends segment r+1-s and receives segment r-s in place.
class Ring {
 public:
  Ring(MPI_Comm comm, int p, int r, int64_t chunk_bytes, RingScratch& scratch)
      : comm_(comm), p_(p), r_(r), chunk_bytes_(chunk_bytes), s_(scratch) {}

  // Posts the messages of op's current step: rq[0] its receive, rq[1] its send.
  void post(const RingOp& op, MPI_Request rq[2]) {
    op.bf16 ? post_as<Bf16Wire>(op, rq) : post_as<Fp32Wire>(op, rq);
  }
  // Once they have completed: the step's reduction, then on to the next step.
  void complete(RingOp& op) { op.bf16 ? complete_as<Bf16Wire>(op) : complete_as<Fp32Wire>(op); }
  void run(RingOp op) {  // blocking
    while (!op.done()) {
      MPI_Request rq[2];
      post(op, rq);
      check(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE), "MPI_Waitall");
      complete(op);
    }
  }

 private:
  int mod(int i) const { return (i % p_ + p_) % p_; }
  int64_t begin(int64_t len, int i) const { return len * i / p_; }
  int64_t size(int64_t len, int i) const { return begin(len, i + 1) - begin(len, i); }
  template <class W>
  int64_t seg() const {
    return std::max<int64_t>(1, chunk_bytes_ / static_cast<int64_t>(sizeof(typename W::T)));
  }
  template <class W>
  int64_t chunk_len(const RingOp& op) const {
    return std::min(seg<W>() * p_, op.count - op.off);
  }

  template <class W>
  void post_as(const RingOp& op, MPI_Request rq[2]) {
    using T = typename W::T;
    const int64_t len = chunk_len<W>(op);
    float* chunk = op.buf + op.off;
    if (op.phase == 0 && op.step == 0) {
      W::reserve(s_, seg<W>(), seg<W>() * p_);
      W::load(chunk, len, s_);
    }
    T* b = W::wire(chunk, s_);
    const int ss = mod(r_ - op.step + op.phase), rs = mod(r_ - op.step - 1 + op.phase);
    T* dst = op.phase == 0 ? W::recv(s_) : b + begin(len, rs);
    check(MPI_Irecv(dst, icount(size(len, rs)), W::type(), mod(r_ - 1), kRingTag, comm_, &rq[0]),
          "MPI_Irecv");
    check(MPI_Isend(b + begin(len, ss), icount(size(len, ss)), W::type(), mod(r_ + 1), kRingTag,
                    comm_, &rq[1]),
          "MPI_Isend");
  }

  template <class W>
  void complete_as(RingOp& op) {
    const int64_t len = chunk_len<W>(op);
    float* chunk = op.buf + op.off;
    if (op.phase == 0) {
      const int rs = mod(r_ - op.step - 1);
      W::reduce(W::wire(chunk, s_) + begin(len, rs), W::recv(s_), size(len, rs));
    }
    if (++op.step < p_ - 1) return;
    op.step = 0;
    if (op.phase == 0) {
      op.phase = 1;
      return;
    }
    W::store(chunk, len, s_);
    op.phase = 0;
    op.off += len;
  }

  MPI_Comm comm_;
  int p_, r_;
  int64_t chunk_bytes_;
  RingScratch& s_;
};

}  // namespace tessera::mpi_ring
