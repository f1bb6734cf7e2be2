// MpiCommunicator: Communicator over an MPI_Comm (CPU backend).
//
// Why not just MPI_Allreduce: with Open MPI 4.1 on one node one large MPI_Allreduce is
// several times slower than the same bytes in 1 MiB messages, and MPI_Reduce_scatter_block
// is much slower than MPI_Allgather (docs/performance.md, "Measurements behind the
// communicator"). So:
//   * all_reduce of count*4 bytes >= ring_threshold_bytes: ring reduce-scatter + ring
//     all-gather of MPI_Irecv+MPI_Isend steps (each rank moves 2(p-1)/p of the data, the
//     bandwidth optimum), processed in chunks so each message is <= chunk_bytes (the fast
//     range) and the working set stays in cache. Below the threshold: MPI_Allreduce.
//   * all_reduce_bf16: always the ring (MPI has no bf16 sum), on bf16 data: each chunk of
//     the buffer is rounded to bf16 into a staging copy, the ring moves and adds that
//     (widen, add in fp32, round to nearest even), and the result is widened back. Its
//     messages hold chunk_bytes / 2 elements, so a chunk covers twice the elements.
//   * reduce_scatter: always the ring (never MPI_Reduce_scatter_block).
//   * all_gather, broadcast, send/recv: MPI_Allgather / MPI_Bcast / MPI_Send / MPI_Recv.
//   * Buffers inside allocate_shared memory (ranks on one node): fp32 all_reduce(_async),
//     reduce_scatter and all_gather instead sum or copy directly in every rank's memory
//     (parallel/shared_memory_collectives.h), whatever their size.
// Defaults, chosen with bench/bench_allreduce at 2 ranks: ring_threshold_bytes = 256 KiB,
//   chunk_bytes = 1 MiB (bytes per ring message: large enough to amortise a message, small
//   enough to stay in cache).
//
// Async operations:
//   * If MPI was initialised with MPI_THREAD_MULTIPLE (Open MPI 4.1.4 here provides it:
//     MPI_Init_thread(MPI_THREAD_MULTIPLE) returns provided == MPI_THREAD_MULTIPLE), the
//     collectives' async forms run the same blocking algorithm on ONE helper thread, in
//     FIFO order, on a private duplicate of the communicator — so they progress while the
//     caller computes (MPI's non-blocking collectives only progress inside MPI calls) and
//     use the fast ring.
//   * Otherwise (MPI_Init, or a lower thread level; the Mesh sets async_thread = 0):
//     all_reduce_async (and all_reduce_bf16_async) queues the operation on a private duplicate communicator and runs
//     it as a non-blocking state machine of the SAME algorithm as all_reduce (the chunked
//     ring of MPI_Irecv/MPI_Isend steps at >= ring_threshold_bytes, MPI_Iallreduce below),
//     so the result is bit-identical to the blocking call. Queued operations run strictly
//     in issue order; they advance only inside this communicator's calls: test() and wait()
//     of any of its requests (test() never blocks) and its blocking collectives, which
//     first complete every queued operation (issue order, as on an NCCL stream).
//     (MPI_Iallreduce itself was slow here: Open MPI's libnbc reduces 2 ranks binomially,
//     whole buffer to rank 0 and back.) reduce_scatter_async / all_gather_async /
//     broadcast_async use MPI_Ireduce_scatter_block / MPI_Iallgather / MPI_Ibcast, which
//     progress only when test()/wait() or other MPI calls are made.
//   * send_async / recv_async always use MPI_Isend / MPI_Irecv on the main communicator.
// The helper thread only touches its own duplicate communicator; blocking calls from the
// caller's thread use another, so the two never mis-match messages.
//
// Lifetime: destroy every MpiCommunicator before MPI_Finalize (it frees its duplicated
// communicators and joins its thread). Pending async operations are completed by the
// destructor.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/cast_bf16.h"
#include "parallel/communicator.h"
#include "parallel/shared_memory_collectives.h"

namespace tessera {

struct MpiCommunicatorOptions {
  int64_t ring_threshold_bytes = 256 << 10;  // all_reduce >= this uses the ring
  int64_t chunk_bytes = 1 << 20;             // max bytes per ring message
  // -1: use the helper thread iff MPI_THREAD_MULTIPLE; 0: never; 1: require it (throws if
  // the thread level is lower).
  int async_thread = -1;
};

// Buffers of the ring all-reduce (one set per thread of use).
struct RingScratch {
  std::vector<float> f32;                 // fp32: the received segment; reduce_scatter's
  std::vector<kernels::bf16> bf16_chunk;  // bf16: the current chunk, rounded
  std::vector<kernels::bf16> bf16_recv;   // bf16: the received segment
};

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates comm (MPI_Comm_dup; collective over comm). The caller keeps ownership of comm.
  explicit MpiCommunicator(MPI_Comm comm, MpiCommunicatorOptions opts = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }
  const MpiCommunicatorOptions& options() const { return opts_; }
  bool async_uses_thread() const { return use_thread_; }

  void all_reduce(float* buf, int64_t count) override;
  CommRequest all_reduce_async(float* buf, int64_t count) override;
  void all_reduce_bf16(float* buf, int64_t count) override;
  CommRequest all_reduce_bf16_async(float* buf, int64_t count) override;
  void reduce_scatter(const float* send, float* recv, int64_t recv_count) override;
  CommRequest reduce_scatter_async(const float* send, float* recv, int64_t recv_count) override;
  void all_gather(const float* send, float* recv, int64_t send_count) override;
  CommRequest all_gather_async(const float* send, float* recv, int64_t send_count) override;
  void broadcast(float* buf, int64_t count, int root) override;
  CommRequest broadcast_async(float* buf, int64_t count, int root) override;
  void send(const float* buf, int64_t count, int peer, int tag = 0) override;
  void recv(float* buf, int64_t count, int peer, int tag = 0) override;
  CommRequest send_async(const float* buf, int64_t count, int peer, int tag = 0) override;
  CommRequest recv_async(float* buf, int64_t count, int peer, int tag = 0) override;
  void barrier() override;
  void all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) override;
  void broadcast_bytes(void* buf, int64_t bytes, int root) override;
  void all_gather_bytes(const void* send, void* recv, int64_t bytes) override;
  // Ranks all on one node: an MPI-3 shared-memory window per call
  // (parallel/shared_memory_collectives.h); fp32 all_reduce / all_reduce_async /
  // reduce_scatter / all_gather inside one run directly in it.
  float* allocate_shared(int64_t count, std::string* why_not) override;

  // The ring all-reduce regardless of size (benchmarks, tests).
  void ring_all_reduce(float* buf, int64_t count) {
    drain();
    ring_all_reduce_on(comm_, scratch_, buf, count);
  }

 private:
  void all_reduce_on(MPI_Comm c, RingScratch& scratch, float* buf, int64_t count, bool bf16);
  void ring_all_reduce_on(MPI_Comm c, RingScratch& scratch, float* buf, int64_t count,
                          bool bf16 = false);
  CommRequest queue_all_reduce(float* buf, int64_t count, bool bf16);
  void ring_reduce_scatter_on(MPI_Comm c, RingScratch& scratch, const float* send,
                              float* recv, int64_t recv_count);
  void all_gather_on(MPI_Comm c, const float* send, float* recv, int64_t send_count);
  void broadcast_on(MPI_Comm c, float* buf, int64_t count, int root);
  CommRequest enqueue(std::function<void()> fn);
  void worker_loop();

 public:
  struct AsyncOp;  // a queued all_reduce_async without the helper thread (in the .cpp)
 private:
  // Advances the queue in order until `until` is complete (nullptr: until empty); with
  // block=false it returns as soon as the head cannot advance without waiting.
  bool progress_queue(const AsyncOp* until, bool block);
  void drain() { if (!pending_.empty()) progress_queue(nullptr, true); }
  std::deque<std::shared_ptr<AsyncOp>> pending_;
  RingScratch async_scratch_;  // buffers of the queue's head (ring)

  MPI_Comm comm_ = MPI_COMM_NULL;         // caller-thread operations
  MPI_Comm worker_comm_ = MPI_COMM_NULL;  // helper-thread operations, or the async queue's
  int rank_ = 0, size_ = 1;
  MpiCommunicatorOptions opts_;
  bool use_thread_ = false;
  RingScratch scratch_, worker_scratch_;
  // allocate_shared's memory; the one holding [buf, buf + count), or null.
  std::vector<std::unique_ptr<SharedMemoryCollectives>> shared_;
  SharedMemoryCollectives* shared_holding(const float* buf, int64_t count) const;

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
};

}  // namespace tessera
