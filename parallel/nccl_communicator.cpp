// NcclCommunicator (see nccl_communicator.h): the Communicator interface on NCCL calls.
// Compiled twice: against NCCL and the CUDA runtime, and against the NCCL and CUDA
// emulators (TESSERA_CUDA_EMULATOR), so that CI runs every line of it under mpirun.
#include "parallel/nccl_communicator.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "parallel/nccl_failures.h"
#ifdef TESSERA_CUDA_EMULATOR
#include "kernels/cuda/emulator/nccl_emulator.h"
#else
#include <nccl.h>
#endif

namespace tessera {

namespace {

namespace gpu = ::tessera::kernels::cuda;
using Clock = std::chrono::steady_clock;

// How often the watchdog looks (a failure ends the run within about this long).
constexpr std::chrono::milliseconds kWatchdogPeriod{50};


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

bool failed(ncclResult_t result) { return result != ncclSuccess && result != ncclInProgress; }

// One operation: its completion event on the communication stream, when it was issued
// (the watchdog's timeout), and (bf16 on the wire) the 16-bit copy, which must live
// until the operation has finished.
struct Completion {
  cudaEvent_t done = nullptr;
  Clock::time_point issued;
  std::string what;
  gpu::DeviceArray<uint16_t> wire;
  ~Completion() {
    if (done) cudaEventDestroy(done);
  }
};

class NcclCommunicator;

class NcclRequest final : public CommRequestImpl {
 public:
  NcclRequest(NcclCommunicator* comm, std::shared_ptr<Completion> c)
      : comm_(comm), completion_(std::move(c)) {}
  void wait() override;
  bool test() override;

 private:
  NcclCommunicator* comm_;
  std::shared_ptr<Completion> completion_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclUniqueId& id, int nranks, int rank, const NcclOptions& options)
      : rank_(rank), size_(nranks), options_(options) {
    gpu::check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
    // Non-blocking: not ordered with the legacy default stream except through our events.
    gpu::check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                    "cudaStreamCreateWithFlags (NCCL's stream)");
    gpu::check_cuda(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming),
                    "cudaEventCreateWithFlags");
    watchdog_ = std::thread([this] { watch(); });  // the initialisation waits for every rank
    ncclUniqueId nid;
    std::memcpy(&nid, id.bytes, sizeof(nid));
    // Blocking: a call returns once its work is queued (whatever NCCL_COMM_BLOCKING says).
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 1;
    ncclResult_t init = ncclSuccess;
    {
      std::lock_guard<std::recursive_mutex> nccl(nccl_mutex_);
      InsideNccl inside(*this, "ncclCommInitRankConfig");
      init = ncclCommInitRankConfig(&comm_, nranks, nid, rank, &config);
      if (failed(init)) comm_ = nullptr;
    }
    if (failed(init)) {
      stop_watchdog();
      cudaEventDestroy(compute_ready_);
      cudaStreamDestroy(stream_);
      throw CommError(nccl_failure("ncclCommInitRankConfig", ncclGetErrorString(init)));
    }
  }
  // Destroying waits for the peers; aborting does not. So: destroy only after every
  // operation finished; abort after a failure, or while an exception unwinds (this group
  // or another failed, and the peers may never do their part of what is queued). The
  // watchdog looks on until the end (on_stuck, should the destroy not return).
  ~NcclCommunicator() override {
    bool finished_cleanly = std::uncaught_exceptions() == 0;
    if (finished_cleanly) try {
        synchronize();
      } catch (const std::exception&) {
        finished_cleanly = false;
      }
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      failures_.destroying();
    }
    {
      std::lock_guard<std::recursive_mutex> nccl(nccl_mutex_);
      if (comm_) (finished_cleanly ? ncclCommDestroy : ncclCommAbort)(comm_);
      comm_ = nullptr;
    }
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      in_flight_.clear();
      spare_wires_.clear();
    }
    stop_watchdog();
    if (compute_ready_) cudaEventDestroy(compute_ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  // The blocking forms return once the compute stream is ordered after the operation.
  void all_reduce(float* buf, int64_t count) override {
    compute_after(issue_all_reduce(buf, count));
  }
  CommRequest all_reduce_async(float* buf, int64_t count) override {
    return request(issue_all_reduce(buf, count));
  }
  void all_reduce_bf16(float* buf, int64_t count) override {
    compute_after(issue_all_reduce_bf16(buf, count));
  }
  CommRequest all_reduce_bf16_async(float* buf, int64_t count) override {
    return request(issue_all_reduce_bf16(buf, count));
  }
  void reduce_scatter(const float* send, float* recv, int64_t recv_count) override {
    compute_after(issue_reduce_scatter(send, recv, recv_count));
  }
  CommRequest reduce_scatter_async(const float* send, float* recv, int64_t recv_count) override {
    return request(issue_reduce_scatter(send, recv, recv_count));
  }
  void all_gather(const float* send, float* recv, int64_t send_count) override {
    compute_after(issue_all_gather(send, recv, send_count));
  }
  CommRequest all_gather_async(const float* send, float* recv, int64_t send_count) override {
    return request(issue_all_gather(send, recv, send_count));
  }
  void broadcast(float* buf, int64_t count, int root) override {
    compute_after(issue_broadcast(buf, count, root));
  }
  CommRequest broadcast_async(float* buf, int64_t count, int root) override {
    return request(issue_broadcast(buf, count, root));
  }
  // NCCL ignores tags and matches in order between a pair of ranks.
  void send(const float* buf, int64_t count, int peer, int) override {
    compute_after(issue_p2p(true, const_cast<float*>(buf), count, peer));
  }
  void recv(float* buf, int64_t count, int peer, int) override {
    compute_after(issue_p2p(false, buf, count, peer));
  }
  CommRequest send_async(const float* buf, int64_t count, int peer, int) override {
    return request(issue_p2p(true, const_cast<float*>(buf), count, peer));
  }
  CommRequest recv_async(float* buf, int64_t count, int peer, int) override {
    return request(issue_p2p(false, buf, count, peer));
  }

  // One NCCL group: the messages progress together, so their order cannot deadlock.
  CommRequest exchange_async(const std::vector<PeerMessage>& messages) override {
    return request(issue("ncclGroupStart/ncclSend/ncclRecv/ncclGroupEnd", [&](Completion&) {
      check_nccl(ncclGroupStart(), "ncclGroupStart");
      // The group is closed whatever happens: NCCL keeps one open group per thread, which
      // would swallow the calls of every other communicator after a failure here.
      ncclResult_t posted = ncclSuccess;
      for (const PeerMessage& m : messages) {
        posted = m.send ? ncclSend(m.buf, (size_t)m.count, ncclFloat32, m.peer, comm_, stream_)
                        : ncclRecv(m.buf, (size_t)m.count, ncclFloat32, m.peer, comm_, stream_);
        if (failed(posted)) break;
      }
      const ncclResult_t ended = ncclGroupEnd();
      check_nccl(posted, "ncclSend/ncclRecv");
      check_nccl(ended, "ncclGroupEnd");
    }));
  }

  void barrier() override {
    int32_t one = 1;
    all_reduce(&one, 1, ScalarType::i32, ReduceOp::sum);
  }

  // Host values, staged through a device buffer; the host waits for them.
  void all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) override {
    const size_t bytes = (size_t)count * scalar_bytes(type);
    char* d = stage(bytes);
    gpu::check_cuda(cudaMemcpy(d, buf, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (agreement)");
    host_wait(issue("ncclAllReduce (host values)", [&](Completion&) {
      check_nccl(ncclAllReduce(d, d, (size_t)count, nccl_type(type), nccl_op(op), comm_, stream_),
                 "ncclAllReduce (host values)");
    }));
    gpu::check_cuda(cudaMemcpy(buf, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (agreement)");
  }
  void broadcast_bytes(void* buf, int64_t bytes, int root) override {
    char* d = stage((size_t)bytes);
    gpu::check_cuda(cudaMemcpy(d, buf, (size_t)bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    host_wait(issue("ncclBroadcast (host bytes)", [&](Completion&) {
      check_nccl(ncclBroadcast(d, d, (size_t)bytes, ncclUint8, root, comm_, stream_),
                 "ncclBroadcast (host bytes)");
    }));
    gpu::check_cuda(cudaMemcpy(buf, d, (size_t)bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  void all_gather_bytes(const void* send, void* recv, int64_t bytes) override {
    const size_t all = (size_t)bytes * (size_t)size_;
    char* d = stage(all);
    char* mine = d + (size_t)bytes * (size_t)rank_;
    gpu::check_cuda(cudaMemcpy(mine, send, (size_t)bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    host_wait(issue("ncclAllGather (host bytes)", [&](Completion&) {
      check_nccl(ncclAllGather(mine, d, (size_t)bytes, ncclUint8, comm_, stream_),
                 "ncclAllGather (host bytes)");
    }));
    gpu::check_cuda(cudaMemcpy(recv, d, all, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

  // The host waits for every operation issued so far.
  void synchronize() override {
    std::vector<std::shared_ptr<Completion>> pending;
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      pending.assign(in_flight_.begin(), in_flight_.end());
    }
    for (const auto& c : pending) host_wait(c);
    std::lock_guard<std::mutex> state(state_mutex_);
    failures_.throw_if_any(pending.empty() ? "synchronize" : pending.back()->what);
    retire_finished();
  }

  float* allocate_shared(int64_t, std::string* why_not) override {
    if (why_not) *why_not = "NCCL reaches ordinary device memory (no shared host window)";
    return nullptr;
  }

  // NcclRequest's wait(): the compute stream waits for the operation; the host does not.
  void compute_after(const std::shared_ptr<Completion>& c) {
    throw_if_failed(c->what);
    gpu::check_cuda(cudaStreamWaitEvent(nullptr, c->done, 0), "cudaStreamWaitEvent (compute)");
  }
  // NcclRequest's test(): has the operation finished?
  bool finished(const Completion& c) {
    throw_if_failed(c.what);
    const cudaError_t state = cudaEventQuery(c.done);
    if (state == cudaSuccess) return true;
    if (state != cudaErrorNotReady) fail(c.what, cudaGetErrorString(state));
    return false;
  }

 private:
  // ---- Issuing operations ----------------------------------------------------------

  std::shared_ptr<Completion> issue_all_reduce(float* buf, int64_t count) {
    return issue("ncclAllReduce", [&](Completion&) {
      check_nccl(ncclAllReduce(buf, buf, (size_t)count, ncclFloat32, ncclSum, comm_, stream_),
                 "ncclAllReduce");
    });
  }
  // bf16 on the wire: rounded to a 16-bit copy, summed as ncclBfloat16, widened back.
  std::shared_ptr<Completion> issue_all_reduce_bf16(float* buf, int64_t count) {
    return issue(
        "ncclAllReduce (bf16)",
        [&](Completion& c) {
          check_nccl(ncclAllReduce(c.wire.data(), c.wire.data(), (size_t)count, ncclBfloat16,
                                   ncclSum, comm_, stream_),
                     "ncclAllReduce (bf16)");
        },
        [&](Completion& c) {
          c.wire = take_wire(count);
          gpu::round_to_16bit(kernels::Dtype::bf16, c.wire.data(), buf, count, stream_);
        },
        [&](Completion& c) {
          gpu::widen_16bit(kernels::Dtype::bf16, buf, c.wire.data(), count, stream_);
        });
  }
  std::shared_ptr<Completion> issue_reduce_scatter(const float* send, float* recv,
                                                   int64_t recv_count) {
    return issue("ncclReduceScatter", [&](Completion&) {
      check_nccl(ncclReduceScatter(send, recv, (size_t)recv_count, ncclFloat32, ncclSum, comm_,
                                   stream_),
                 "ncclReduceScatter");
    });
  }
  std::shared_ptr<Completion> issue_all_gather(const float* send, float* recv,
                                               int64_t send_count) {
    return issue("ncclAllGather", [&](Completion&) {
      check_nccl(ncclAllGather(send, recv, (size_t)send_count, ncclFloat32, comm_, stream_),
                 "ncclAllGather");
    });
  }
  std::shared_ptr<Completion> issue_broadcast(float* buf, int64_t count, int root) {
    return issue("ncclBroadcast", [&](Completion&) {
      check_nccl(ncclBroadcast(buf, buf, (size_t)count, ncclFloat32, root, comm_, stream_),
                 "ncclBroadcast");
    });
  }
  std::shared_ptr<Completion> issue_p2p(bool is_send, float* buf, int64_t count, int peer) {
    return issue(is_send ? "ncclSend" : "ncclRecv", [&](Completion&) {
      check_nccl(is_send ? ncclSend(buf, (size_t)count, ncclFloat32, peer, comm_, stream_)
                         : ncclRecv(buf, (size_t)count, ncclFloat32, peer, comm_, stream_),
                 is_send ? "ncclSend" : "ncclRecv");
    });
  }

  // One operation on stream_: `before` (CUDA work), `enqueue` (its NCCL calls), `after`
  // (CUDA work), after the compute stream's queued work (so it reads finished buffers),
  // with its completion recorded and kept in flight. Throws CommError, after aborting, if
  // the communicator has failed or a call fails. Only the NCCL calls hold nccl_mutex_
  // (the watchdog's abort waits for them), not the CUDA calls, which block while the
  // GPU's queue is full.
  using Step = std::function<void(Completion&)>;
  std::shared_ptr<Completion> issue(const char* what, const Step& enqueue,
                                    const Step& before = {}, const Step& after = {}) {
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      failures_.fail_if_found_while_idle(last_issued_);
      failures_.throw_if_any(what);
    }
    if (operations_ == options_.fail_at_operation)
      fail(what, "ncclSystemError: injected failure (NcclOptions.fail_at_operation = " +
                     std::to_string(options_.fail_at_operation) + ")");
    const bool inject_async_error = operations_ == options_.async_error_at_operation;
    operations_++;
    gpu::check_cuda(cudaEventRecord(compute_ready_, nullptr), "cudaEventRecord (compute)");
    gpu::check_cuda(cudaStreamWaitEvent(stream_, compute_ready_, 0), "cudaStreamWaitEvent");
    auto c = std::make_shared<Completion>();
    c->what = what;
    gpu::check_cuda(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming),
                    "cudaEventCreateWithFlags");
    if (before) before(*c);
    {
      std::lock_guard<std::recursive_mutex> nccl(nccl_mutex_);
      throw_if_failed(what);  // the watchdog may have aborted meanwhile
      InsideNccl inside(*this, what);
      enqueue(*c);
    }
    if (after) after(*c);
    gpu::check_cuda(cudaEventRecord(c->done, stream_), "cudaEventRecord (NCCL)");
    std::lock_guard<std::mutex> state(state_mutex_);
    c->issued = Clock::now();
    in_flight_.push_back(c);
    last_issued_ = what;
    injected_async_error_ = injected_async_error_ || inject_async_error;
    return c;
  }
  CommRequest request(std::shared_ptr<Completion> c) {
    return CommRequest(std::make_shared<NcclRequest>(this, std::move(c)));
  }

  // The host polls until `c` has finished; a failure the watchdog finds meanwhile throws.
  void host_wait(const std::shared_ptr<Completion>& c) {
    while (!finished(*c)) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }

  // ---- In flight: retiring finished operations, reusing their bf16 copies ----------

  // The oldest operations that have finished leave in_flight_ (the stream runs them in
  // order); their 16-bit copies are kept for reuse (a cudaFree would wait for the device).
  // Called by the watchdog and synchronize(), not when an operation is issued: under the
  // CUDA emulator an event query by the issuing thread lands results (cuda_emulator.h),
  // which would hide a missing wait for an earlier operation.
  void retire_finished() {
    while (!in_flight_.empty() && cudaEventQuery(in_flight_.front()->done) == cudaSuccess) {
      if (in_flight_.front()->wire.size() > 0) spare_wires_.push_back(std::move(in_flight_.front()->wire));
      in_flight_.pop_front();
    }
  }
  gpu::DeviceArray<uint16_t> take_wire(int64_t count) {
    std::lock_guard<std::mutex> state(state_mutex_);
    for (size_t i = 0; i < spare_wires_.size(); i++)
      if (spare_wires_[i].size() >= count) {
        gpu::DeviceArray<uint16_t> wire = std::move(spare_wires_[i]);
        spare_wires_.erase(spare_wires_.begin() + (ptrdiff_t)i);
        return wire;
      }
    return gpu::DeviceArray<uint16_t>(count, "bf16 copy of an all-reduce");
  }

  // ---- Failures -----------------------------------------------------------------------

  // Inside enqueue (the caller holds nccl_mutex_).
  void check_nccl(ncclResult_t result, const std::string& what) {
    if (!failed(result)) return;
    std::string reason = ncclGetErrorString(result);
    const char* detail = comm_ ? ncclGetLastError(comm_) : "";
    if (detail && *detail) reason += ": " + std::string(detail);
    fail(what, reason);
  }
  // Aborts the communicator (NCCL's rule after an error: its state is unknown; abort does
  // not wait for the peers; the caller holds nccl_mutex_).
  void abort_nccl() {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  // After a failure, every call throws (NcclFailures::throw_if_any).
  void throw_if_failed(const std::string& what) {
    std::lock_guard<std::mutex> state(state_mutex_);
    failures_.throw_if_any(what);
  }
  // A failure the host found: abort, and throw. (Noticed only once the abort returned:
  // if it does not return, the watchdog's on_stuck ends the process.)
  [[noreturn]] void fail(const std::string& what, const std::string& reason) {
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      failures_.record(what, reason);
    }
    {
      std::lock_guard<std::recursive_mutex> nccl(nccl_mutex_);
      abort_nccl();
    }
    std::lock_guard<std::mutex> state(state_mutex_);
    failures_.noticed();
    throw CommError(nccl_failure(what, reason));
  }

  // Tells the watchdog that the host is inside an NCCL call, for as long as it exists.
  class InsideNccl {
   public:
    InsideNccl(NcclCommunicator& comm, const char* what) : comm_(comm) {
      std::lock_guard<std::mutex> state(comm_.state_mutex_);
      comm_.failures_.entering(what);
    }
    ~InsideNccl() {
      std::lock_guard<std::mutex> state(comm_.state_mutex_);
      comm_.failures_.left();
    }
    InsideNccl(const InsideNccl&) = delete;
    InsideNccl& operator=(const InsideNccl&) = delete;

   private:
    NcclCommunicator& comm_;
  };

  // ---- The watchdog ---------------------------------------------------------------------
  //
  // A thread that looks every kWatchdogPeriod for what the host, which does not wait for
  // NCCL, cannot see: an asynchronous NCCL error (a peer that died, a network failure) or
  // an operation unfinished, or the host inside an NCCL call, after
  // options_.timeout_seconds (a peer missing or stuck). It
  // records the failure, so that the host's next call throws, and aborts the
  // communicator, which ends the kernels NCCL still runs, so the compute stream and a
  // host waiting behind them move on. NCCL forbids concurrent calls on one communicator:
  // the abort waits until the host is out of its NCCL call (nccl_mutex_). If the host
  // does not notice the failure within options_.stuck_after_seconds (stuck inside NCCL,
  // or in a CUDA call behind a kernel that the abort did not end), options_.on_stuck is
  // called.
  void watch() {
    cudaSetDevice(device_);  // this thread's event queries go to the communicator's GPU
    std::unique_lock<std::mutex> stop(stop_mutex_);
    while (!stop_.wait_for(stop, kWatchdogPeriod, [this] { return stopping_; })) {
      stop.unlock();  // the destructor need not wait for a look
      look();
      stop.lock();
    }
  }
  // One look. Throws nothing (an exception would end the process here) and holds no lock
  // across a call that can take long.
  void look() {
    ncclResult_t async = ncclSuccess;
    {
      std::unique_lock<std::recursive_mutex> nccl(nccl_mutex_, std::try_to_lock);
      if (nccl && comm_) {
        const ncclResult_t asked = ncclCommGetAsyncError(comm_, &async);
        if (failed(asked)) async = asked;
      }
    }
    std::string stuck;
    bool should_abort = false;
    {
      std::lock_guard<std::mutex> state(state_mutex_);
      if (!failures_.any() && !failures_.is_destroying()) {
        retire_finished();
        const std::string reason = watchdog_finding(async);
        if (!reason.empty() && in_flight_.empty() && failed(async))
          failures_.found_while_idle(reason);
        else if (!reason.empty())
          failures_.record(in_flight_.empty() ? last_issued_ : in_flight_.front()->what, reason);
        const std::string inside = failures_.inside_longer_than(options_.timeout_seconds);
        if (!inside.empty())  // no abort while the host is in the call: on_stuck ends it
          failures_.record(inside, "the host has been inside this call for more than " +
                                       NcclFailures::seconds_text(options_.timeout_seconds) +
                                       " s: a peer rank is missing or stuck; found by the "
                                       "watchdog");
      }
      should_abort = failures_.any() && !failures_.is_destroying();
      if (options_.on_stuck) stuck = failures_.stuck_message(options_.stuck_after_seconds);
    }
    if (should_abort) abort_in_background();
    if (!stuck.empty()) options_.on_stuck(stuck);
  }
  // "" while all is well (the caller holds state_mutex_).
  std::string watchdog_finding(ncclResult_t async) const {
    if (failed(async)) return std::string(ncclGetErrorString(async)) + ", found by the watchdog";
    if (injected_async_error_)
      return "ncclSystemError: injected asynchronous failure (NcclOptions.async_error_at_operation "
             "= " + std::to_string(options_.async_error_at_operation) + "), found by the watchdog";
    if (!in_flight_.empty() && options_.timeout_seconds > 0 &&
        NcclFailures::seconds_since(in_flight_.front()->issued) > options_.timeout_seconds)
      return "not finished after " + NcclFailures::seconds_text(options_.timeout_seconds) +
             " s: a peer rank is missing, stuck or far behind; found by the watchdog";
    return "";
  }
  // ncclCommAbort from a thread of its own, once: it can take long, and the watchdog must
  // go on looking. Skipped while the host is inside an NCCL call (tried again next look).
  void abort_in_background() {
    std::unique_lock<std::recursive_mutex> nccl(nccl_mutex_, std::try_to_lock);
    if (!nccl || !comm_) return;
    std::thread([doomed = comm_] { ncclCommAbort(doomed); }).detach();
    comm_ = nullptr;
  }

  void stop_watchdog() {
    {
      std::lock_guard<std::mutex> lock(stop_mutex_);
      stopping_ = true;
    }
    stop_.notify_one();
    watchdog_.join();
  }

  char* stage(size_t bytes) {
    if ((size_t)staging_.size() < bytes) staging_ = gpu::DeviceArray<char>((int64_t)bytes, "NCCL staging");
    return staging_.data();
  }

  ncclComm_t comm_ = nullptr;  // under nccl_mutex_ once the watchdog runs
  int rank_ = 0, size_ = 1, device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
  NcclOptions options_;
  int64_t operations_ = 0;
  gpu::DeviceArray<char> staging_;

  // Held across NCCL calls (the host's enqueues; the watchdog's error query and abort).
  std::recursive_mutex nccl_mutex_;
  // Shared with the watchdog, under state_mutex_ (never held across a call that blocks):
  // the operations in flight (oldest first), the spare bf16 copies, the first failure.
  std::mutex state_mutex_;
  std::deque<std::shared_ptr<Completion>> in_flight_;
  std::vector<gpu::DeviceArray<uint16_t>> spare_wires_;
  NcclFailures failures_;
  std::string last_issued_ = "no operation yet";  // names an error found with none in flight
  bool injected_async_error_ = false;

  std::thread watchdog_;
  std::mutex stop_mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
};

void NcclRequest::wait() {
  if (!completion_) return;
  comm_->compute_after(completion_);
  completion_.reset();
}

bool NcclRequest::test() {
  if (!completion_) return true;
  if (!comm_->finished(*completion_)) return false;
  completion_.reset();
  return true;
}

}  // namespace

std::string nccl_unavailable_reason() { return ""; }

NcclUniqueId nccl_unique_id() {
  ncclUniqueId nid;
  const ncclResult_t r = ncclGetUniqueId(&nid);
  if (r != ncclSuccess) throw CommError(nccl_failure("ncclGetUniqueId", ncclGetErrorString(r)));
  NcclUniqueId id;
  std::memcpy(id.bytes, &nid, sizeof(nid));
  return id;
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId& id, int nranks, int rank,
                                                     const NcclOptions& options) {
  return std::make_unique<NcclCommunicator>(id, nranks, rank, options);
}

}  // namespace tessera
