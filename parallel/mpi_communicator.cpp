#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "parallel/mpi_ring.h"

namespace tessera {
namespace {

using mpi_ring::check;
using mpi_ring::grow;
using mpi_ring::icount;
using mpi_ring::kRingTag;
using mpi_ring::Ring;
using mpi_ring::RingOp;

constexpr int64_t kMaxMpiCount = int64_t{1} << 30;  // elements per MPI call (int counts)

// Completion of a task run on the helper thread.
class ThreadRequest final : public CommRequestImpl {
 public:
  void wait() override {
    done_.wait(false, std::memory_order_acquire);
    if (error_) std::rethrow_exception(error_);
  }
  bool test() override {
    if (!done_.load(std::memory_order_acquire)) return false;
    if (error_) std::rethrow_exception(error_);
    return true;
  }
  void finish(std::exception_ptr e) {
    error_ = std::move(e);
    done_.store(true, std::memory_order_release);
    done_.notify_all();
  }

 private:
  std::atomic<bool> done_{false};
  std::exception_ptr error_;
};

// Completion of MPI non-blocking calls.
class MpiRequest final : public CommRequestImpl {
 public:
  std::vector<MPI_Request> reqs;
  void wait() override {
    if (reqs.empty()) return;
    check(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE),
          "MPI_Waitall");
    reqs.clear();
  }
  bool test() override {
    if (reqs.empty()) return true;
    int flag = 0;
    check(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE),
          "MPI_Testall");
    if (flag) reqs.clear();
    return flag != 0;
  }
};

inline void add3(float* __restrict dst, const float* __restrict a, const float* __restrict b,
                 int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
}

// A collective on shared memory, to completion.
void run_direct(SharedMemoryCollectives& s, SharedMemoryCollectives::Kind kind, const float* buf,
                int64_t count, float* recv = nullptr) {
  auto op = s.start(kind, buf, count, recv);
  s.advance(op, /*block=*/true);
}

// One rank's bf16 all-reduce: its own value rounded to bf16.
void round_to_bf16(float* buf, int64_t n) {
  for (int64_t i = 0; i < n; ++i) buf[i] = kernels::bf16_to_fp32(kernels::fp32_to_bf16(buf[i]));
}

}  // namespace

// One all_reduce_async queued without the helper thread: the ring of ring_all_reduce_on
// (the same Ring steps, so the same bits), one MPI_Iallreduce below the ring threshold, or
// the direct sum of a buffer in allocate_shared's memory. Only the head of the
// communicator's queue has messages posted (or its direct sum announced).
struct MpiCommunicator::AsyncOp final : public CommRequestImpl {
  MpiCommunicator* owner = nullptr;
  RingOp work;       // buffer, count, and where it stands (MPI_Iallreduce: work.off only)
  bool ring = false;
  SharedMemoryCollectives* direct = nullptr;  // the shared memory holding the buffer
  std::optional<SharedMemoryCollectives::Op> shared_op;  // once started
  bool done = false;
  bool posted = false;  // rq holds this step's requests
  MPI_Request rq[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};

  void wait() override {
    if (!done) owner->progress_queue(this, true);
  }
  bool test() override { return done || owner->progress_queue(this, false); }
};

bool MpiCommunicator::progress_queue(const AsyncOp* until, bool block) {
  Ring ring(worker_comm_, size_, rank_, opts_.chunk_bytes, async_scratch_);
  while (!pending_.empty()) {
    AsyncOp& op = *pending_.front();
    RingOp& w = op.work;
    if (op.direct) {
      if (!op.shared_op)
        op.shared_op = op.direct->start(SharedMemoryCollectives::Kind::all_reduce, w.buf, w.count);
      if (!op.direct->advance(*op.shared_op, block)) return false;
      op.done = true;
      const bool reached = &op == until;
      pending_.pop_front();
      if (reached) return true;
      continue;
    }
    if (!op.posted) {  // post this step's messages
      if (op.ring) {
        ring.post(w, op.rq);
      } else {
        check(MPI_Iallreduce(MPI_IN_PLACE, w.buf + w.off,
                             icount(std::min(kMaxMpiCount, w.count - w.off)), MPI_FLOAT, MPI_SUM,
                             worker_comm_, &op.rq[0]),
              "MPI_Iallreduce");
        op.rq[1] = MPI_REQUEST_NULL;
      }
      op.posted = true;
    }
    if (block) {
      check(MPI_Waitall(2, op.rq, MPI_STATUSES_IGNORE), "MPI_Waitall");
    } else {
      int flag = 0;
      check(MPI_Testall(2, op.rq, &flag, MPI_STATUSES_IGNORE), "MPI_Testall");
      if (!flag) return false;
    }
    op.posted = false;
    if (op.ring)
      ring.complete(w);
    else
      w.off += kMaxMpiCount;
    op.done = w.done();
    if (op.done) {
      const bool reached = &op == until;
      pending_.pop_front();
      if (reached) return true;
    }
  }
  return until == nullptr;  // until not queued: it was complete already
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, MpiCommunicatorOptions opts) : opts_(opts) {
  if (opts_.chunk_bytes < 4) throw std::invalid_argument("MpiCommunicator: chunk_bytes < 4");
  check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  int provided = MPI_THREAD_SINGLE;
  check(MPI_Query_thread(&provided), "MPI_Query_thread");
  const bool multiple = provided == MPI_THREAD_MULTIPLE;
  if (opts_.async_thread == 1 && !multiple)
    throw std::runtime_error(
        "MpiCommunicator: async_thread=1 needs MPI_Init_thread(MPI_THREAD_MULTIPLE)");
  use_thread_ = multiple && opts_.async_thread != 0;
  check(MPI_Comm_dup(comm, &worker_comm_), "MPI_Comm_dup");
  if (use_thread_) worker_ = std::thread([this] { worker_loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  // While an exception unwinds, peers may never join pending operations: leave them (the
  // job ends through MPI_Abort) rather than wait forever.
  if (std::uncaught_exceptions() == 0) {
    try {
      drain();
    } catch (...) {  // a destructor must not throw; the MPI error handler has reported it
    }
  }
  shared_.clear();  // the windows before the communicator they were made on
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  if (worker_comm_ != MPI_COMM_NULL) MPI_Comm_free(&worker_comm_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::worker_loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

CommRequest MpiCommunicator::enqueue(std::function<void()> fn) {
  auto req = std::make_shared<ThreadRequest>();
  {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.emplace_back([req, fn = std::move(fn)] {
      try {
        fn();
        req->finish(nullptr);
      } catch (...) {
        req->finish(std::current_exception());
      }
    });
  }
  cv_.notify_one();
  return CommRequest(req);
}

// ---------------------------------------------------------------- all_reduce

void MpiCommunicator::all_reduce_on(MPI_Comm c, RingScratch& scratch, float* buf,
                                    int64_t count, bool bf16) {
  if (count <= 0) return;
  if (size_ == 1) {
    if (bf16) round_to_bf16(buf, count);
    return;
  }
  if (bf16 || count * 4 >= opts_.ring_threshold_bytes) {
    ring_all_reduce_on(c, scratch, buf, count, bf16);
    return;
  }
  for (int64_t off = 0; off < count; off += kMaxMpiCount)
    check(MPI_Allreduce(MPI_IN_PLACE, buf + off, icount(std::min(kMaxMpiCount, count - off)),
                        MPI_FLOAT, MPI_SUM, c),
          "MPI_Allreduce");
}

// The Ring above, each step waited for (Irecv + Isend + Waitall: MPI_Sendrecv's pattern).
void MpiCommunicator::ring_all_reduce_on(MPI_Comm c, RingScratch& scratch, float* buf,
                                         int64_t count, bool bf16) {
  if (count <= 0 || size_ == 1) return;
  Ring(c, size_, rank_, opts_.chunk_bytes, scratch).run(RingOp{buf, count, bf16});
}

void MpiCommunicator::all_reduce(float* buf, int64_t count) {
  drain();
  if (SharedMemoryCollectives* s = shared_holding(buf, count)) {
    run_direct(*s, SharedMemoryCollectives::Kind::all_reduce, buf, count);
    return;
  }
  all_reduce_on(comm_, scratch_, buf, count, false);
}

void MpiCommunicator::all_reduce_bf16(float* buf, int64_t count) {
  drain();
  all_reduce_on(comm_, scratch_, buf, count, true);
}

CommRequest MpiCommunicator::all_reduce_async(float* buf, int64_t count) {
  return queue_all_reduce(buf, count, false);
}

CommRequest MpiCommunicator::all_reduce_bf16_async(float* buf, int64_t count) {
  return queue_all_reduce(buf, count, true);
}

CommRequest MpiCommunicator::queue_all_reduce(float* buf, int64_t count, bool bf16) {
  if (count <= 0) return {};
  if (size_ == 1) {  // nothing to communicate (bf16: round now)
    all_reduce_on(comm_, scratch_, buf, count, bf16);
    return {};
  }
  SharedMemoryCollectives* direct = bf16 ? nullptr : shared_holding(buf, count);
  if (use_thread_)
    return enqueue([this, buf, count, bf16, direct] {
      if (direct) {
        run_direct(*direct, SharedMemoryCollectives::Kind::all_reduce, buf, count);
      } else {
        all_reduce_on(worker_comm_, worker_scratch_, buf, count, bf16);
      }
    });
  auto op = std::make_shared<AsyncOp>();
  op->owner = this;
  op->work = RingOp{buf, count, bf16};
  op->direct = direct;
  op->ring = direct == nullptr && (bf16 || count * 4 >= opts_.ring_threshold_bytes);
  pending_.push_back(op);
  progress_queue(op.get(), false);  // start it if it is the head (posts its first step)
  return CommRequest(op);
}

// ---------------------------------------------------------------- reduce_scatter

// Ring: at step s rank r sends its partial sum of segment (r-s-1) to the right and receives
// the left neighbour's partial sum of segment (r-s-2), adding its own contribution; after
// p-1 steps it holds the full sum of segment r. Chunked like the all-reduce.
void MpiCommunicator::ring_reduce_scatter_on(MPI_Comm c, RingScratch& ring_scratch,
                                             const float* send, float* recv,
                                             int64_t recv_count) {
  const int p = size_, r = rank_;
  if (recv_count <= 0) return;
  if (p == 1) {
    if (send != recv) std::memmove(recv, send, sizeof(float) * recv_count);
    return;
  }
  const int right = (r + 1) % p, left = (r - 1 + p) % p;
  const int64_t cmax = std::max<int64_t>(1, opts_.chunk_bytes / 4);
  std::vector<float>& scratch = ring_scratch.f32;
  grow(scratch, 2 * cmax);
  for (int64_t off = 0; off < recv_count; off += cmax) {
    const int64_t len = std::min(cmax, recv_count - off);
    auto seg = [&](int i) { return send + static_cast<int64_t>((i % p + p) % p) * recv_count + off; };
    float* acc = scratch.data();
    float* tmp = scratch.data() + cmax;
    for (int s = 0; s < p - 1; ++s) {
      const float* out = (s == 0) ? seg(r - 1) : acc;
      check(MPI_Sendrecv(out, icount(len), MPI_FLOAT, right, kRingTag, tmp, icount(len),
                         MPI_FLOAT, left, kRingTag, c, MPI_STATUS_IGNORE),
            "MPI_Sendrecv");
      add3(acc, tmp, seg(r - s - 2), len);
    }
    std::memcpy(recv + off, acc, sizeof(float) * len);
  }
}

void MpiCommunicator::reduce_scatter(const float* send, float* recv, int64_t recv_count) {
  drain();
  if (SharedMemoryCollectives* s = shared_holding(send, size_ * recv_count)) {
    run_direct(*s, SharedMemoryCollectives::Kind::reduce_scatter, send, size_ * recv_count, recv);
    return;
  }
  ring_reduce_scatter_on(comm_, scratch_, send, recv, recv_count);
}

CommRequest MpiCommunicator::reduce_scatter_async(const float* send, float* recv,
                                                  int64_t recv_count) {
  if (recv_count <= 0) return {};
  if (use_thread_)
    return enqueue([this, send, recv, recv_count] {
      ring_reduce_scatter_on(worker_comm_, worker_scratch_, send, recv, recv_count);
    });
  if (recv_count > kMaxMpiCount)
    throw std::invalid_argument("MpiCommunicator: reduce_scatter_async count > 2^30 without threads");
  auto req = std::make_shared<MpiRequest>();
  req->reqs.emplace_back();
  const bool inplace = recv == send + static_cast<int64_t>(rank_) * recv_count;
  // In place for MPI_Ireduce_scatter_block means recv buffer holds all p chunks: not our
  // layout, so the in-place case goes through a non-overlapping check instead.
  if (inplace && size_ > 1)
    throw std::invalid_argument(
        "MpiCommunicator: in-place reduce_scatter_async needs MPI_THREAD_MULTIPLE");
  check(MPI_Ireduce_scatter_block(send, recv, icount(recv_count), MPI_FLOAT, MPI_SUM, comm_,
                                  &req->reqs.back()),
        "MPI_Ireduce_scatter_block");
  return CommRequest(req);
}

// ---------------------------------------------------------------- all_gather

void MpiCommunicator::all_gather_on(MPI_Comm c, const float* send, float* recv,
                                    int64_t send_count) {
  if (send_count <= 0) return;
  if (send_count > kMaxMpiCount)
    throw std::invalid_argument("MpiCommunicator: all_gather count > 2^30");
  const bool inplace = send == recv + static_cast<int64_t>(rank_) * send_count;
  check(MPI_Allgather(inplace ? MPI_IN_PLACE : send, icount(send_count), MPI_FLOAT, recv,
                      icount(send_count), MPI_FLOAT, c),
        "MPI_Allgather");
}

void MpiCommunicator::all_gather(const float* send, float* recv, int64_t send_count) {
  drain();
  if (SharedMemoryCollectives* s = shared_holding(recv, size_ * send_count)) {
    float* mine = recv + rank_ * send_count;  // the input goes in place first
    if (send != mine) std::memmove(mine, send, sizeof(float) * send_count);
    run_direct(*s, SharedMemoryCollectives::Kind::all_gather, recv, size_ * send_count);
    return;
  }
  all_gather_on(comm_, send, recv, send_count);
}

CommRequest MpiCommunicator::all_gather_async(const float* send, float* recv,
                                              int64_t send_count) {
  if (send_count <= 0) return {};
  if (use_thread_)
    return enqueue([this, send, recv, send_count] { all_gather_on(worker_comm_, send, recv, send_count); });
  if (send_count > kMaxMpiCount)
    throw std::invalid_argument("MpiCommunicator: all_gather count > 2^30");
  auto req = std::make_shared<MpiRequest>();
  req->reqs.emplace_back();
  const bool inplace = send == recv + static_cast<int64_t>(rank_) * send_count;
  check(MPI_Iallgather(inplace ? MPI_IN_PLACE : send, icount(send_count), MPI_FLOAT, recv,
                       icount(send_count), MPI_FLOAT, comm_, &req->reqs.back()),
        "MPI_Iallgather");
  return CommRequest(req);
}

// ---------------------------------------------------------------- broadcast

void MpiCommunicator::broadcast_on(MPI_Comm c, float* buf, int64_t count, int root) {
  for (int64_t off = 0; off < count; off += kMaxMpiCount)
    check(MPI_Bcast(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, root, c),
          "MPI_Bcast");
}

void MpiCommunicator::broadcast(float* buf, int64_t count, int root) {
  drain();
  broadcast_on(comm_, buf, count, root);
}

CommRequest MpiCommunicator::broadcast_async(float* buf, int64_t count, int root) {
  if (count <= 0) return {};
  if (use_thread_)
    return enqueue([this, buf, count, root] { broadcast_on(worker_comm_, buf, count, root); });
  auto req = std::make_shared<MpiRequest>();
  for (int64_t off = 0; off < count; off += kMaxMpiCount) {
    req->reqs.emplace_back();
    check(MPI_Ibcast(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, root,
                     comm_, &req->reqs.back()),
          "MPI_Ibcast");
  }
  return CommRequest(req);
}

// ---------------------------------------------------------------- point-to-point

void MpiCommunicator::send(const float* buf, int64_t count, int peer, int tag) {
  drain();
  for (int64_t off = 0; off < count; off += kMaxMpiCount)
    check(MPI_Send(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, peer, tag,
                   comm_),
          "MPI_Send");
}

void MpiCommunicator::recv(float* buf, int64_t count, int peer, int tag) {
  drain();
  for (int64_t off = 0; off < count; off += kMaxMpiCount)
    check(MPI_Recv(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, peer, tag,
                   comm_, MPI_STATUS_IGNORE),
          "MPI_Recv");
}

CommRequest MpiCommunicator::send_async(const float* buf, int64_t count, int peer, int tag) {
  auto req = std::make_shared<MpiRequest>();
  for (int64_t off = 0; off < count; off += kMaxMpiCount) {
    req->reqs.emplace_back();
    check(MPI_Isend(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, peer, tag,
                    comm_, &req->reqs.back()),
          "MPI_Isend");
  }
  return CommRequest(req);
}

CommRequest MpiCommunicator::recv_async(float* buf, int64_t count, int peer, int tag) {
  auto req = std::make_shared<MpiRequest>();
  for (int64_t off = 0; off < count; off += kMaxMpiCount) {
    req->reqs.emplace_back();
    check(MPI_Irecv(buf + off, icount(std::min(kMaxMpiCount, count - off)), MPI_FLOAT, peer, tag,
                    comm_, &req->reqs.back()),
          "MPI_Irecv");
  }
  return CommRequest(req);
}

void MpiCommunicator::barrier() {
  drain();
  check(MPI_Barrier(comm_), "MPI_Barrier");
}

float* MpiCommunicator::allocate_shared(int64_t count, std::string* why_not) {
  drain();
  std::string reason;
  if (!SharedMemoryCollectives::node_local(comm_))
    reason = "the ranks are on more than one node";
  else
    reason = SharedMemoryCollectives::why_not(comm_, count);
  if (!reason.empty()) {
    if (why_not) *why_not = reason;
    return nullptr;
  }
  shared_.push_back(std::make_unique<SharedMemoryCollectives>(comm_, count));
  return shared_.back()->data();
}

SharedMemoryCollectives* MpiCommunicator::shared_holding(const float* buf, int64_t count) const {
  if (size_ == 1 || count <= 0) return nullptr;
  for (const auto& s : shared_)
    if (s->covers(buf, count)) return s.get();
  return nullptr;
}

}  // namespace tessera

// ---------------------------------------------------------------- typed agreements

namespace tessera {
namespace {

MPI_Datatype mpi_type(ScalarType type) {
  switch (type) {
    case ScalarType::f32: return MPI_FLOAT;
    case ScalarType::f64: return MPI_DOUBLE;
    case ScalarType::i32: return MPI_INT32_T;
    case ScalarType::i64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

}  // namespace

void MpiCommunicator::all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) {
  drain();
  char* p = static_cast<char*>(buf);
  const int64_t bytes = static_cast<int64_t>(scalar_bytes(type));
  for (int64_t off = 0; off < count; off += kMaxMpiCount)
    check(MPI_Allreduce(MPI_IN_PLACE, p + off * bytes, icount(std::min(kMaxMpiCount, count - off)),
                        mpi_type(type), mpi_op(op), comm_),
          "MPI_Allreduce");
}

void MpiCommunicator::broadcast_bytes(void* buf, int64_t bytes, int root) {
  drain();
  char* p = static_cast<char*>(buf);
  for (int64_t off = 0; off < bytes; off += kMaxMpiCount)
    check(MPI_Bcast(p + off, icount(std::min(kMaxMpiCount, bytes - off)), MPI_BYTE, root, comm_),
          "MPI_Bcast");
}

void MpiCommunicator::all_gather_bytes(const void* send, void* recv, int64_t bytes) {
  drain();
  if (bytes <= 0) return;
  if (bytes > kMaxMpiCount) throw CommError("all_gather_bytes: more than 2^30 bytes per rank");
  check(MPI_Allgather(send, icount(bytes), MPI_BYTE, recv, icount(bytes), MPI_BYTE, comm_),
        "MPI_Allgather");
}

}  // namespace tessera
