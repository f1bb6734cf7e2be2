// NcclCommunicator (see nccl_communicator.h): the Communicator interface on NCCL calls.
// Compiled twice: against NCCL and the CUDA runtime, and against the NCCL and CUDA
// emulators (TESSERA_CUDA_EMULATOR), so that CI runs every line of it under mpirun.
#include "parallel/nccl_communicator.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#ifdef TESSERA_CUDA_EMULATOR
#include "kernels/cuda/emulator/nccl_emulator.h"
#else
#include <nccl.h>
#endif

namespace tessera {

namespace {

namespace gpu = ::tessera::kernels::cuda;

static_assert(sizeof(NcclUniqueId::bytes) == sizeof(ncclUniqueId));

ncclDataType_t nccl_type(ScalarType type) {
  switch (type) {
    case ScalarType::f32: return ncclFloat32;
    case ScalarType::f64: return ncclFloat64;
    case ScalarType::i32: return ncclInt32;
    case ScalarType::i64: return ncclInt64;
  }
  throw CommError("communication failed in NcclCommunicator: unknown element type");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  throw CommError("communication failed in NcclCommunicator: unknown reduction");
}

std::string failure(const std::string& what, const std::string& reason) {
  return "communication failed in NcclCommunicator: " + what + " (" + reason + ")";
}

// One operation's completion: an event on the communication stream, and (bf16 on the
// wire) the 16-bit copy that must live until the operation has finished.
struct Completion {
  cudaEvent_t done = nullptr;
  gpu::DeviceArray<uint16_t> wire;
  ~Completion() {
    if (done) cudaEventDestroy(done);
  }
};

class NcclCommunicator;

class NcclRequest final : public CommRequestImpl {
 public:
  NcclRequest(NcclCommunicator* comm, std::shared_ptr<Completion> c, std::string what)
      : comm_(comm), completion_(std::move(c)), what_(std::move(what)) {}
  void wait() override;
  bool test() override;

 private:
  NcclCommunicator* comm_;
  std::shared_ptr<Completion> completion_;
  std::string what_;
  bool finished_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclUniqueId& id, int nranks, int rank, const NcclOptions& options)
      : options_(options) {
    ncclUniqueId nid;
    std::memcpy(&nid, id.bytes, sizeof(nid));
    check(ncclCommInitRank(&comm_, nranks, nid, rank), "ncclCommInitRank");
    rank_ = rank, size_ = nranks;
    // Non-blocking: not ordered with the legacy default stream except through our events.
    gpu::check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                    "cudaStreamCreateWithFlags (NCCL's stream)");
    gpu::check_cuda(cudaEventCreate(&compute_ready_), "cudaEventCreate");
  }
  ~NcclCommunicator() override {
    if (comm_) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
    }
    if (compute_ready_) cudaEventDestroy(compute_ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(float* buf, int64_t count) override { all_reduce_async(buf, count).wait(); }
  CommRequest all_reduce_async(float* buf, int64_t count) override {
    auto c = begin("ncclAllReduce");
    check(ncclAllReduce(buf, buf, (size_t)count, ncclFloat32, ncclSum, comm_, stream_),
          "ncclAllReduce");
    return finish(std::move(c), "ncclAllReduce");
  }

  void all_reduce_bf16(float* buf, int64_t count) override {
    all_reduce_bf16_async(buf, count).wait();
  }
  CommRequest all_reduce_bf16_async(float* buf, int64_t count) override {
    auto c = begin("ncclAllReduce (bf16)");
    c->wire = gpu::DeviceArray<uint16_t>(count, "bf16 copy of an all-reduce");
    gpu::round_to_16bit(kernels::Dtype::bf16, c->wire.data(), buf, count, stream_);
    check(ncclAllReduce(c->wire.data(), c->wire.data(), (size_t)count, ncclBfloat16, ncclSum,
                        comm_, stream_),
          "ncclAllReduce (bf16)");
    gpu::widen_16bit(kernels::Dtype::bf16, buf, c->wire.data(), count, stream_);
    return finish(std::move(c), "ncclAllReduce (bf16)");
  }

  void reduce_scatter(const float* send, float* recv, int64_t recv_count) override {
    reduce_scatter_async(send, recv, recv_count).wait();
  }
  CommRequest reduce_scatter_async(const float* send, float* recv, int64_t recv_count) override {
    auto c = begin("ncclReduceScatter");
    check(ncclReduceScatter(send, recv, (size_t)recv_count, ncclFloat32, ncclSum, comm_, stream_),
          "ncclReduceScatter");
    return finish(std::move(c), "ncclReduceScatter");
  }

  void all_gather(const float* send, float* recv, int64_t send_count) override {
    all_gather_async(send, recv, send_count).wait();
  }
  CommRequest all_gather_async(const float* send, float* recv, int64_t send_count) override {
    auto c = begin("ncclAllGather");
    check(ncclAllGather(send, recv, (size_t)send_count, ncclFloat32, comm_, stream_),
          "ncclAllGather");
    return finish(std::move(c), "ncclAllGather");
  }

  void broadcast(float* buf, int64_t count, int root) override {
    broadcast_async(buf, count, root).wait();
  }
  CommRequest broadcast_async(float* buf, int64_t count, int root) override {
    auto c = begin("ncclBroadcast");
    check(ncclBroadcast(buf, buf, (size_t)count, ncclFloat32, root, comm_, stream_),
          "ncclBroadcast");
    return finish(std::move(c), "ncclBroadcast");
  }

  void send(const float* buf, int64_t count, int peer, int tag) override {
    send_async(buf, count, peer, tag).wait();
  }
  void recv(float* buf, int64_t count, int peer, int tag) override {
    recv_async(buf, count, peer, tag).wait();
  }
  CommRequest send_async(const float* buf, int64_t count, int peer, int) override {
    auto c = begin("ncclSend");
    check(ncclSend(buf, (size_t)count, ncclFloat32, peer, comm_, stream_), "ncclSend");
    return finish(std::move(c), "ncclSend");
  }
  CommRequest recv_async(float* buf, int64_t count, int peer, int) override {
    auto c = begin("ncclRecv");
    check(ncclRecv(buf, (size_t)count, ncclFloat32, peer, comm_, stream_), "ncclRecv");
    return finish(std::move(c), "ncclRecv");
  }

  // One NCCL group: the messages progress together, so their order cannot deadlock.
  CommRequest exchange_async(const std::vector<PeerMessage>& messages) override {
    auto c = begin("ncclGroupStart/ncclSend/ncclRecv/ncclGroupEnd");
    check(ncclGroupStart(), "ncclGroupStart");
    // The group is closed whatever happens: NCCL keeps one open group per thread, which
    // would swallow the calls of every other communicator after a failure here.
    ncclResult_t posted = ncclSuccess;
    const char* what = "";
    for (const PeerMessage& m : messages) {
      posted = m.send ? ncclSend(m.buf, (size_t)m.count, ncclFloat32, m.peer, comm_, stream_)
                      : ncclRecv(m.buf, (size_t)m.count, ncclFloat32, m.peer, comm_, stream_);
      what = m.send ? "ncclSend" : "ncclRecv";
      if (posted != ncclSuccess && posted != ncclInProgress) break;
    }
    const ncclResult_t ended = ncclGroupEnd();
    check(posted, what);
    check(ended, "ncclGroupEnd");
    return finish(std::move(c), "ncclGroupEnd (sends and receives)");
  }

  void barrier() override {
    int32_t one = 1;
    all_reduce(&one, 1, ScalarType::i32, ReduceOp::sum);
  }

  // Host values, staged through a device buffer.
  void all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) override {
    const size_t bytes = (size_t)count * scalar_bytes(type);
    char* d = stage(bytes);
    gpu::check_cuda(cudaMemcpy(d, buf, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (agreement)");
    auto c = begin("ncclAllReduce (host values)");
    check(ncclAllReduce(d, d, (size_t)count, nccl_type(type), nccl_op(op), comm_, stream_),
          "ncclAllReduce (host values)");
    finish(std::move(c), "ncclAllReduce (host values)").wait();
    gpu::check_cuda(cudaMemcpy(buf, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (agreement)");
  }
  void broadcast_bytes(void* buf, int64_t bytes, int root) override {
    char* d = stage((size_t)bytes);
    gpu::check_cuda(cudaMemcpy(d, buf, (size_t)bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    auto c = begin("ncclBroadcast (host bytes)");
    check(ncclBroadcast(d, d, (size_t)bytes, ncclUint8, root, comm_, stream_),
          "ncclBroadcast (host bytes)");
    finish(std::move(c), "ncclBroadcast (host bytes)").wait();
    gpu::check_cuda(cudaMemcpy(buf, d, (size_t)bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  void all_gather_bytes(const void* send, void* recv, int64_t bytes) override {
    const size_t all = (size_t)bytes * (size_t)size_;
    char* d = stage(all);
    char* mine = d + (size_t)bytes * (size_t)rank_;
    gpu::check_cuda(cudaMemcpy(mine, send, (size_t)bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    auto c = begin("ncclAllGather (host bytes)");
    check(ncclAllGather(mine, d, (size_t)bytes, ncclUint8, comm_, stream_),
          "ncclAllGather (host bytes)");
    finish(std::move(c), "ncclAllGather (host bytes)").wait();
    gpu::check_cuda(cudaMemcpy(recv, d, all, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

  float* allocate_shared(int64_t, std::string* why_not) override {
    if (why_not) *why_not = "NCCL reaches ordinary device memory (no shared host window)";
    return nullptr;
  }

  // Polls `c` until it is complete (see the header): throws CommError, after aborting
  // the communicator, on an error of the operation or an asynchronous NCCL error.
  void wait_for(Completion& c, const std::string& what) {
    while (!poll(c, what)) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  bool poll(Completion& c, const std::string& what) {
    const cudaError_t state = cudaEventQuery(c.done);
    if (state == cudaSuccess) return true;
    if (state != cudaErrorNotReady) fail(what, cudaGetErrorString(state));
    ncclResult_t async = ncclSuccess;
    if (comm_) check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    if (async != ncclSuccess && async != ncclInProgress)
      fail(what, std::string(ncclGetErrorString(async)) + ", found while waiting");
    return false;
  }

 private:
  // Before an operation: ordered after the compute stream's queued work; the injected
  // failure of NcclOptions.
  std::shared_ptr<Completion> begin(const char* what) {
    check_open(what);
    if (options_.fail_at_operation >= 0 && operations_ == options_.fail_at_operation)
      fail(what, "ncclSystemError: injected failure (NcclOptions.fail_at_operation = " +
                     std::to_string(options_.fail_at_operation) + ")");
    operations_++;
    gpu::check_cuda(cudaEventRecord(compute_ready_, nullptr), "cudaEventRecord (compute)");
    gpu::check_cuda(cudaStreamWaitEvent(stream_, compute_ready_, 0), "cudaStreamWaitEvent");
    auto c = std::make_shared<Completion>();
    gpu::check_cuda(cudaEventCreate(&c->done), "cudaEventCreate");
    return c;
  }
  CommRequest finish(std::shared_ptr<Completion> c, const char* what) {
    gpu::check_cuda(cudaEventRecord(c->done, stream_), "cudaEventRecord (NCCL)");
    return CommRequest(std::make_shared<NcclRequest>(this, std::move(c), what));
  }

  void check_open(const std::string& what) const {
    if (!comm_) throw CommError(failure(what, "the communicator was aborted after an earlier failure"));
  }
  void check(ncclResult_t result, const std::string& what) {
    if (result == ncclSuccess || result == ncclInProgress) return;
    std::string reason = ncclGetErrorString(result);
    const char* detail = comm_ ? ncclGetLastError(comm_) : "";
    if (detail && *detail) reason += ": " + std::string(detail);
    fail(what, reason);
  }
  // Aborts the communicator (NCCL's rule after an error: its state is unknown, and abort
  // does not wait for the peers) and throws.
  [[noreturn]] void fail(const std::string& what, const std::string& reason) {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    throw CommError(failure(what, reason));
  }

  char* stage(size_t bytes) {
    if ((size_t)staging_.size() < bytes) staging_ = gpu::DeviceArray<char>((int64_t)bytes, "NCCL staging");
    return staging_.data();
  }

  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
  NcclOptions options_;
  int64_t operations_ = 0;
  gpu::DeviceArray<char> staging_;
};

void NcclRequest::wait() {
  if (finished_) return;
  comm_->wait_for(*completion_, what_);
  finished_ = true;
  completion_.reset();
}

bool NcclRequest::test() {
  if (finished_) return true;
  if (!comm_->poll(*completion_, what_)) return false;
  finished_ = true;
  completion_.reset();
  return true;
}

}  // namespace

std::string nccl_unavailable_reason() { return ""; }

NcclUniqueId nccl_unique_id() {
  ncclUniqueId nid;
  const ncclResult_t r = ncclGetUniqueId(&nid);
  if (r != ncclSuccess) throw CommError(failure("ncclGetUniqueId", ncclGetErrorString(r)));
  NcclUniqueId id;
  std::memcpy(id.bytes, &nid, sizeof(nid));
  return id;
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId& id, int nranks, int rank,
                                                     const NcclOptions& options) {
  return std::make_unique<NcclCommunicator>(id, nranks, rank, options);
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap,
                                                     const NcclOptions& options) {
  // Rank 0's error message, if it could not make an id (its length agreed first, so that
  // every rank throws it), else the id.
  std::string error;
  NcclUniqueId id;
  if (bootstrap.rank() == 0) {
    try {
      id = nccl_unique_id();
    } catch (const Error& e) {
      error = e.what();
    }
  }
  int64_t error_bytes = (int64_t)error.size();
  bootstrap.all_reduce(&error_bytes, 1, ScalarType::i64, ReduceOp::max);
  if (error_bytes > 0) {
    error.resize((size_t)error_bytes);
    bootstrap.broadcast_bytes(error.data(), error_bytes, 0);
    throw CommError(error);
  }
  bootstrap.broadcast_bytes(id.bytes, sizeof(id.bytes), 0);
  return make_nccl_communicator(id, bootstrap.size(), bootstrap.rank(), options);
}

}  // namespace tessera
