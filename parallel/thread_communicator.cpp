#include "parallel/thread_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "kernels/cpu/cast_bf16.h"

namespace tessera {

namespace {

CommError failed(const std::string& what) {
  return CommError("communication failed in a thread group: " + what);
}

template <class T>
void reduce_into(T* acc, const T* x, int64_t n, ReduceOp op) {
  for (int64_t i = 0; i < n; i++) {
    switch (op) {
      case ReduceOp::sum: acc[i] += x[i]; break;
      case ReduceOp::max: acc[i] = std::max(acc[i], x[i]); break;
      case ReduceOp::min: acc[i] = std::min(acc[i], x[i]); break;
    }
  }
}

void reduce_typed(void* acc, const void* x, int64_t n, ScalarType type, ReduceOp op) {
  switch (type) {
    case ScalarType::f32: reduce_into((float*)acc, (const float*)x, n, op); break;
    case ScalarType::f64: reduce_into((double*)acc, (const double*)x, n, op); break;
    case ScalarType::i32: reduce_into((int32_t*)acc, (const int32_t*)x, n, op); break;
    case ScalarType::i64: reduce_into((int64_t*)acc, (const int64_t*)x, n, op); break;
  }
}

}  // namespace

class ThreadGroup {
 public:
  ThreadGroup(int size, std::chrono::milliseconds timeout)
      : size_(size), timeout_(timeout), slots_(size) {}

  // Every rank arrives before any leaves; throws if the group is broken or a peer is late.
  void barrier(const char* what) {
    std::unique_lock<std::mutex> lk(mu_);
    check_unbroken(what);
    const uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      generation_++;
      cv_.notify_all();
      return;
    }
    const bool met = cv_.wait_for(lk, timeout_, [&] { return generation_ != generation || broken_; });
    if (!met) {
      broken_ = true;
      cv_.notify_all();
      throw failed(std::string(what) + ": a peer did not arrive within the timeout");
    }
    if (generation_ == generation) check_unbroken(what);
  }

  // Publishes `mine` as rank's buffer and returns every rank's, after all have published.
  // The caller reads them, then calls barrier() before any rank may reuse its buffer.
  const std::vector<const void*>& exchange(int rank, const void* mine, const char* what) {
    slots_[rank] = mine;
    barrier(what);
    return slots_;
  }

  void post(int src, int dst, int tag, const void* data, int64_t bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    const char* p = (const char*)data;
    mail_[{src, dst, tag}].emplace_back(p, p + bytes);
    cv_.notify_all();
  }

  // Takes the oldest message from src to dst with tag into buf; block = false returns
  // false when there is none yet.
  bool take(int src, int dst, int tag, void* buf, int64_t bytes, bool block) {
    std::unique_lock<std::mutex> lk(mu_);
    auto& box = mail_[{src, dst, tag}];
    if (block) {
      const bool arrived = cv_.wait_for(lk, timeout_, [&] { return !box.empty() || broken_; });
      if (!arrived) throw failed("recv: no message from rank " + std::to_string(src) + " within the timeout");
    }
    if (box.empty()) {
      if (broken_) throw failed("recv: the group was broken by a failing rank");
      return false;
    }
    check((int64_t)box.front().size() == bytes,
          "recv: a message of " + std::to_string(box.front().size()) + " bytes where " +
              std::to_string(bytes) + " were expected");
    std::memcpy(buf, box.front().data(), (size_t)bytes);
    box.pop_front();
    return true;
  }

  void break_group() {
    std::lock_guard<std::mutex> lk(mu_);
    broken_ = true;
    cv_.notify_all();
  }

  int size() const { return size_; }

 private:
  void check_unbroken(const char* what) const {
    if (broken_) throw failed(std::string(what) + ": the group was broken by a failing rank");
  }

  const int size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
  std::vector<const void*> slots_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<char>>> mail_;
};

namespace {

// A recv_async: complete once its message has been taken.
class ThreadRecv final : public CommRequestImpl {
 public:
  ThreadRecv(ThreadGroup& g, int src, int dst, int tag, void* buf, int64_t bytes)
      : g_(g), src_(src), dst_(dst), tag_(tag), buf_(buf), bytes_(bytes) {}
  void wait() override {
    if (!done_) done_ = g_.take(src_, dst_, tag_, buf_, bytes_, true);
  }
  bool test() override {
    if (!done_) done_ = g_.take(src_, dst_, tag_, buf_, bytes_, false);
    return done_;
  }

 private:
  ThreadGroup& g_;
  int src_, dst_, tag_;
  void* buf_;
  int64_t bytes_;
  bool done_ = false;
};

}  // namespace

ThreadCommunicator::ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank)
    : group_(std::move(group)), rank_(rank), size_(group_->size()) {}

ThreadCommunicator::~ThreadCommunicator() = default;

void ThreadCommunicator::break_group() { group_->break_group(); }

void ThreadCommunicator::all_reduce(void* buf, int64_t count, ScalarType type, ReduceOp op) {
  if (size_ == 1 || count <= 0) return;
  const int64_t bytes = count * (int64_t)scalar_bytes(type);
  const auto& all = group_->exchange(rank_, buf, "all_reduce");
  std::vector<char> acc((const char*)all[0], (const char*)all[0] + bytes);
  for (int r = 1; r < size_; r++) reduce_typed(acc.data(), all[r], count, type, op);
  group_->barrier("all_reduce");
  std::memcpy(buf, acc.data(), (size_t)bytes);
}

void ThreadCommunicator::all_reduce(float* buf, int64_t count) {
  all_reduce(buf, count, ScalarType::f32, ReduceOp::sum);
}

CommRequest ThreadCommunicator::all_reduce_async(float* buf, int64_t count) {
  all_reduce(buf, count);
  return {};
}

// Each rank's buffer rounded to bf16, summed in rank order with every partial sum
// rounded to bf16 (as a bf16 ring rounds), then widened back.
void ThreadCommunicator::all_reduce_bf16(float* buf, int64_t count) {
  using kernels::bf16_to_fp32;
  using kernels::fp32_to_bf16;
  if (count <= 0) return;
  if (size_ == 1) {
    for (int64_t i = 0; i < count; i++) buf[i] = bf16_to_fp32(fp32_to_bf16(buf[i]));
    return;
  }
  const auto& all = group_->exchange(rank_, buf, "all_reduce_bf16");
  std::vector<float> acc(count);
  for (int64_t i = 0; i < count; i++) {
    float s = bf16_to_fp32(fp32_to_bf16(((const float*)all[0])[i]));
    for (int r = 1; r < size_; r++)
      s = bf16_to_fp32(fp32_to_bf16(s + bf16_to_fp32(fp32_to_bf16(((const float*)all[r])[i]))));
    acc[i] = s;
  }
  group_->barrier("all_reduce_bf16");
  std::memcpy(buf, acc.data(), sizeof(float) * count);
}

CommRequest ThreadCommunicator::all_reduce_bf16_async(float* buf, int64_t count) {
  all_reduce_bf16(buf, count);
  return {};
}

void ThreadCommunicator::reduce_scatter(const float* send, float* recv, int64_t recv_count) {
  if (recv_count <= 0) return;
  const auto& all = group_->exchange(rank_, send, "reduce_scatter");
  const int64_t off = rank_ * recv_count;
  std::vector<float> acc((const float*)all[0] + off, (const float*)all[0] + off + recv_count);
  for (int r = 1; r < size_; r++)
    reduce_into(acc.data(), (const float*)all[r] + off, recv_count, ReduceOp::sum);
  group_->barrier("reduce_scatter");
  std::memcpy(recv, acc.data(), sizeof(float) * recv_count);
}

CommRequest ThreadCommunicator::reduce_scatter_async(const float* send, float* recv,
                                                     int64_t recv_count) {
  reduce_scatter(send, recv, recv_count);
  return {};
}

void ThreadCommunicator::all_gather_bytes(const void* send, void* recv, int64_t bytes) {
  if (bytes <= 0) return;
  const auto& all = group_->exchange(rank_, send, "all_gather");
  std::vector<char> out((size_t)(bytes * size_));
  for (int r = 0; r < size_; r++) std::memcpy(out.data() + r * bytes, all[r], (size_t)bytes);
  group_->barrier("all_gather");
  std::memcpy(recv, out.data(), out.size());
}

void ThreadCommunicator::all_gather(const float* send, float* recv, int64_t send_count) {
  all_gather_bytes(send, recv, send_count * (int64_t)sizeof(float));
}

CommRequest ThreadCommunicator::all_gather_async(const float* send, float* recv,
                                                 int64_t send_count) {
  all_gather(send, recv, send_count);
  return {};
}

void ThreadCommunicator::broadcast_bytes(void* buf, int64_t bytes, int root) {
  if (size_ == 1 || bytes <= 0) return;
  const auto& all = group_->exchange(rank_, buf, "broadcast");
  if (rank_ != root) std::memcpy(buf, all[root], (size_t)bytes);
  group_->barrier("broadcast");
}

void ThreadCommunicator::broadcast(float* buf, int64_t count, int root) {
  broadcast_bytes(buf, count * (int64_t)sizeof(float), root);
}

CommRequest ThreadCommunicator::broadcast_async(float* buf, int64_t count, int root) {
  broadcast(buf, count, root);
  return {};
}

void ThreadCommunicator::send(const float* buf, int64_t count, int peer, int tag) {
  check(peer >= 0 && peer < size_, "send: no rank " + std::to_string(peer));
  group_->post(rank_, peer, tag, buf, count * (int64_t)sizeof(float));
}

void ThreadCommunicator::recv(float* buf, int64_t count, int peer, int tag) {
  check(peer >= 0 && peer < size_, "recv: no rank " + std::to_string(peer));
  group_->take(peer, rank_, tag, buf, count * (int64_t)sizeof(float), true);
}

CommRequest ThreadCommunicator::send_async(const float* buf, int64_t count, int peer, int tag) {
  send(buf, count, peer, tag);
  return {};
}

CommRequest ThreadCommunicator::recv_async(float* buf, int64_t count, int peer, int tag) {
  check(peer >= 0 && peer < size_, "recv: no rank " + std::to_string(peer));
  return CommRequest(std::make_shared<ThreadRecv>(*group_, peer, rank_, tag, buf,
                                                  count * (int64_t)sizeof(float)));
}

void ThreadCommunicator::barrier() {
  if (size_ > 1) group_->barrier("barrier");
}

std::vector<std::unique_ptr<ThreadCommunicator>> make_thread_communicators(
    int size, std::chrono::milliseconds timeout) {
  check(size >= 1, "a thread group needs at least one rank");
  auto group = std::make_shared<ThreadGroup>(size, timeout);
  std::vector<std::unique_ptr<ThreadCommunicator>> comms;
  for (int r = 0; r < size; r++) comms.push_back(std::make_unique<ThreadCommunicator>(group, r));
  return comms;
}

void run_on_threads(int size, const std::function<void(int rank)>& fn,
                    const std::function<void()>& on_failure) {
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  std::mutex mu;
  for (int r = 0; r < size; r++)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
        std::lock_guard<std::mutex> lk(mu);
        if (on_failure) on_failure();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tessera
