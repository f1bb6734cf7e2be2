// ThreadCommunicator: a Communicator whose ranks are threads of one process.
//
// Parallel code (a tensor-parallel model, a pipeline) runs inside one test process with
// it: give each thread its rank's communicator and every message goes through memory,
// with no mpirun. The arithmetic is that of a reference, not of a fast path: a sum adds
// the ranks' values in rank order (rank 0 + rank 1 + ...), the same on every rank.
//
// Collectives meet at a barrier: each rank publishes its buffer, every rank computes its
// result from all of them, and a second barrier lets the buffers be reused. Point-to-point
// messages are copied into a mailbox per (source, destination, tag), first in first out,
// so send never blocks and recv waits for its message. Async forms complete at once
// (collectives) or on wait()/test() (recv). A rank that waits longer than `timeout` for its
// peers, or whose group was broken by a failing rank (run_on_threads does that), throws
// CommError instead of hanging.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace tessera {

class ThreadGroup;  // the state the ranks share (thread_communicator.cpp)

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank);
  ~ThreadCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  // Collectives: every rank's buffer is read at a barrier; sums in rank order.
  void all_reduce(float* buf, int64_t count) override;
  void all_reduce_bf16(float* buf, int64_t count) override;
  void reduce_scatter(const float* send, float* recv, int64_t recv_count) override;
  void all_gather(const float* send, float* recv, int64_t send_count) override;
  void broadcast(float* buf, int64_t count, int root) override;
  void all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) override;
  void broadcast_bytes(void* buf, int64_t bytes, int root) override;
  void all_gather_bytes(const void* send, void* recv, int64_t bytes) override;
  void barrier() override;
  // Their async forms run the collective and return a completed request.
  CommRequest all_reduce_async(float* buf, int64_t count) override;
  CommRequest all_reduce_bf16_async(float* buf, int64_t count) override;
  CommRequest reduce_scatter_async(const float* send, float* recv, int64_t recv_count) override;
  CommRequest all_gather_async(const float* send, float* recv, int64_t send_count) override;
  CommRequest broadcast_async(float* buf, int64_t count, int root) override;
  // Messages: a send is copied into the peer's mailbox; a recv takes the oldest match.
  void send(const float* buf, int64_t count, int peer, int tag = 0) override;
  void recv(float* buf, int64_t count, int peer, int tag = 0) override;
  CommRequest send_async(const float* buf, int64_t count, int peer, int tag = 0) override;
  CommRequest recv_async(float* buf, int64_t count, int peer, int tag = 0) override;

  // Makes every peer's current or next wait throw (a rank failed and will not come).
  void break_group();

 private:
  std::shared_ptr<ThreadGroup> group_;
  int rank_, size_;
};

// `size` communicators of one group: communicator r belongs to the thread playing rank r.
// timeout: how long a rank waits for its peers before it throws.
std::vector<std::unique_ptr<ThreadCommunicator>> make_thread_communicators(
    int size, std::chrono::milliseconds timeout = std::chrono::seconds(120));

// Runs fn(rank) on `size` threads and joins them; rethrows the first exception of any
// rank after all have ended. `on_failure` runs when a rank throws (break the groups that
// rank takes part in, so its peers stop waiting for it).
void run_on_threads(int size, const std::function<void(int rank)>& fn,
                    const std::function<void()>& on_failure = {});

}  // namespace tessera
