// Communicator: the collective / point-to-point interface Tessera's parallel code uses.
//
// Modelled on NCCL so that a NcclCommunicator (GPU, later) and MpiCommunicator (CPU, now)
// are interchangeable:
//   all_reduce      ncclAllReduce(sum), in place
//   all_reduce_bf16 ncclAllReduce(sum) on ncclBfloat16 copies of the fp32 buffer, in place
//   reduce_scatter  ncclReduceScatter: send holds size()*recv_count, rank r receives chunk r
//   all_gather      ncclAllGather:     send holds send_count, recv holds size()*send_count
//   broadcast       ncclBroadcast, in place
//   send / recv     ncclSend / ncclRecv
// and, for the small messages that keep ranks in agreement (a loss, a norm, a stop signal,
// the first error, a run id), typed forms over any element type and sum / max / min:
//   all_reduce(buf, count, type, op)  ncclAllReduce with that ncclDataType_t and ncclRedOp_t
//   broadcast_bytes / all_gather_bytes  ncclBroadcast / ncclAllGather of ncclUint8
// (parallel/collectives.h builds values, strings and the first error of all ranks on these).
//
// Implementations: MpiCommunicator (parallel/mpi_communicator.h, one per process, over an
// MPI_Comm) and ThreadCommunicator (parallel/thread_communicator.h, ranks as threads of one
// process, for tests of parallel code without mpirun). A failed operation throws
// CommError (a tessera::Error: the command line prints it as one line and exits 2).
// Every operation has a blocking form and an async form that returns a CommRequest with
// wait()/test() (MPI: non-blocking calls or a helper thread; NCCL: enqueued on a stream,
// and its blocking forms and wait() return once the GPU's compute stream is ordered
// after the operation, without the host waiting for it). Buffers are float, counts are
// element counts (int64_t).
//
// Ordering rule (as in NCCL and MPI): collectives on one communicator must be issued in
// the same order on every rank. Async operations issued from one thread complete in issue
// order. A buffer handed to an async operation must not be touched until wait() returns
// (or test() has returned true).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

namespace tessera {

// A collective or point-to-point operation failed (a peer died, a count was refused):
// "communication failed in <where>: <what> (<the backend's reason>)".
struct CommError : Error {
  using Error::Error;
};

// Element types and reductions of the typed all_reduce (NCCL has the same ones).
enum class ScalarType { f32, f64, i32, i64 };
enum class ReduceOp { sum, max, min };
inline size_t scalar_bytes(ScalarType type) {
  return type == ScalarType::f32 || type == ScalarType::i32 ? 4 : 8;
}

// Completion state of one async operation; implemented by each backend.
class CommRequestImpl {
 public:
  virtual ~CommRequestImpl() = default;
  // Returns once complete (NCCL: once the GPU's compute stream is made to wait for it;
  // the host does not wait); rethrows the operation's error.
  virtual void wait() = 0;
  virtual bool test() = 0;  // non-blocking: true once complete (then wait() returns at once)
};

// Handle returned by every async operation. Default-constructed = already complete.
// Copyable (shared state). Destroying a handle does NOT wait: call wait() before reusing
// the buffer.
class CommRequest {
 public:
  CommRequest() = default;
  explicit CommRequest(std::shared_ptr<CommRequestImpl> impl) : impl_(std::move(impl)) {}
  void wait() {
    if (impl_) impl_->wait();
  }
  bool test() { return impl_ ? impl_->test() : true; }
  bool valid() const { return impl_ != nullptr; }

 private:
  std::shared_ptr<CommRequestImpl> impl_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Sum over ranks, in place: buf[0..count) on every rank becomes the element-wise sum.
  virtual void all_reduce(float* buf, int64_t count) = 0;
  virtual CommRequest all_reduce_async(float* buf, int64_t count) = 0;

  // The same sum with bf16 on the wire (half the bytes): buf is fp32 before and after, but
  // each rank's buf is rounded to bf16 (nearest even) once, messages carry bf16, every
  // reduction widens to fp32, adds and rounds the partial sum back to bf16 (as NCCL's bf16
  // ring does), and the bf16 sum is widened back into buf. Every rank ends with the same
  // bits (those of the backend's reduction order). One rank: buf is rounded to bf16.
  // NCCL: convert into a bf16 buffer, ncclAllReduce(ncclBfloat16, ncclSum), convert back.
  virtual void all_reduce_bf16(float* buf, int64_t count) = 0;
  virtual CommRequest all_reduce_bf16_async(float* buf, int64_t count) = 0;

  // send has size()*recv_count elements; rank r receives into recv[0..recv_count) the sum
  // over ranks of send[r*recv_count .. (r+1)*recv_count). send and recv must not overlap,
  // except recv == send + rank()*recv_count (in-place, as NCCL allows).
  virtual void reduce_scatter(const float* send, float* recv, int64_t recv_count) = 0;
  virtual CommRequest reduce_scatter_async(const float* send, float* recv, int64_t recv_count) = 0;

  // recv (size()*send_count elements) becomes the concatenation of every rank's send, in
  // rank order. In place allowed: send == recv + rank()*send_count.
  virtual void all_gather(const float* send, float* recv, int64_t send_count) = 0;
  virtual CommRequest all_gather_async(const float* send, float* recv, int64_t send_count) = 0;

  // buf on every rank becomes root's buf.
  virtual void broadcast(float* buf, int64_t count, int root) = 0;
  virtual CommRequest broadcast_async(float* buf, int64_t count, int root) = 0;

  // Point-to-point. tag distinguishes concurrent messages between the same pair
  // (NCCL ignores tags and matches in order; use tag 0 for code meant to run on both).
  virtual void send(const float* buf, int64_t count, int peer, int tag = 0) = 0;
  virtual void recv(float* buf, int64_t count, int peer, int tag = 0) = 0;
  virtual CommRequest send_async(const float* buf, int64_t count, int peer, int tag = 0) = 0;
  virtual CommRequest recv_async(float* buf, int64_t count, int peer, int tag = 0) = 0;

  // A group of sends and receives posted together (NCCL: between ncclGroupStart and
  // ncclGroupEnd), so that none of them waits for another: where a send blocks until its
  // receive is posted (NCCL's point-to-point), a send and a receive issued one after the
  // other can deadlock two ranks that issue them in the opposite order; in one group they
  // cannot. The request completes when every message has. Default: the async forms above,
  // which never block each other (MPI's non-blocking calls, the thread group's mailbox).
  struct PeerMessage {
    bool send = true;  // false: receive into buf
    float* buf = nullptr;
    int64_t count = 0;
    int peer = 0;
    int tag = 0;
  };
  virtual CommRequest exchange_async(const std::vector<PeerMessage>& messages);

  virtual void barrier() = 0;

  // Returns once every operation issued so far has finished, as the host sees it; throws
  // CommError if one failed. Only NCCL's operations can still be running after their
  // blocking form or wait() returned (on the GPU); elsewhere there is nothing to wait for.
  virtual void synchronize() {}

  // In place over `count` elements of `type`: the element-wise sum, max or min over ranks
  // (any size, but meant for small messages: the fast float path is all_reduce above).
  virtual void all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) = 0;
  // bytes of root's buf to every rank's buf.
  virtual void broadcast_bytes(void* buf, int64_t bytes, int root) = 0;
  // recv (size() * bytes) becomes every rank's send (bytes each), in rank order.
  virtual void all_gather_bytes(const void* send, void* recv, int64_t bytes) = 0;

  // Memory that this communicator's collectives reach on every rank directly (NCCL:
  // ncclMemAlloc + ncclCommRegister, zero-copy inside a node). Collective: every rank
  // calls it in the same order, with the same count. Returns count zeroed floats, owned
  // by the communicator (valid until it is destroyed); all_reduce, all_reduce_async,
  // reduce_scatter and all_gather of buffers inside one such allocation, at the same
  // offset on every rank, then run without copies. Returns nullptr, with the reason in *why_not, when the backend cannot
  // (ranks on several nodes, too little shared memory): use ordinary memory then.
  virtual float* allocate_shared(int64_t count, std::string* why_not) {
    (void)count;
    if (why_not) *why_not = "not supported by this communicator";
    return nullptr;
  }
};

}  // namespace tessera
