#include "parallel/grad_buckets.h"

#include "base/huge_pages.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace tessera {

GradBuckets::GradBuckets(Communicator& comm, float* grads, std::vector<ParamSpan> ready_order,
                         double bucket_mb, bool average, ReduceIn reduce_in)
    : comm_(comm),
      grads_(grads),
      params_(std::move(ready_order)),
      average_(average),
      reduce_in_(reduce_in) {
  if (bucket_mb <= 0) throw std::invalid_argument("GradBuckets: bucket_mb must be > 0");
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024) / 4);
  bucket_of_.assign(params_.size(), -1);
  Bucket cur;
  int64_t cur_lo = 0, cur_hi = 0;
  auto close = [&] {
    if (cur.params.empty()) return;
    if (cur_hi - cur_lo != cur.numel)
      throw std::invalid_argument("GradBuckets: bucket " + std::to_string(buckets_.size()) +
                                  " is not a contiguous range of the gradient buffer");
    cur.offset = cur_lo;
    buckets_.push_back(std::move(cur));
    cur = Bucket{};
  };
  lo_ = INT64_MAX;
  hi_ = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamSpan& ps = params_[i];
    if (ps.numel <= 0 || ps.offset < 0)
      throw std::invalid_argument("GradBuckets: parameter " + std::to_string(i) +
                                  " has an empty or negative range");
    if (!cur.params.empty() && cur.numel + ps.numel > cap) close();
    if (cur.params.empty()) {
      cur_lo = ps.offset;
      cur_hi = ps.offset + ps.numel;
    } else {
      cur_lo = std::min(cur_lo, ps.offset);
      cur_hi = std::max(cur_hi, ps.offset + ps.numel);
    }
    cur.numel += ps.numel;
    cur.params.push_back(static_cast<int>(i));
    bucket_of_[i] = static_cast<int>(buckets_.size());
    lo_ = std::min(lo_, ps.offset);
    hi_ = std::max(hi_, ps.offset + ps.numel);
  }
  close();
  if (params_.empty()) lo_ = hi_ = 0;
  int64_t total = 0;
  for (const auto& b : buckets_) total += b.numel;
  if (total != hi_ - lo_)
    throw std::invalid_argument("GradBuckets: parameter ranges overlap or leave gaps");
  pending_.resize(buckets_.size());
  ready_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
  reqs_.resize(buckets_.size());
  // The all-reduce of the gradient range is bound by memory and per-page kernel work:
  // back it with 2 MiB pages (base/huge_pages.h; TESSERA_HUGE_PAGES=0 turns it off).
  if (comm_.size() > 1) advise_huge_pages(grads_ + lo_, sizeof(float) * (hi_ - lo_));
}

void GradBuckets::launch_ready_prefix() {
  while (next_launch_ < static_cast<int>(buckets_.size()) && pending_[next_launch_] == 0) {
    const Bucket& b = buckets_[next_launch_];
    float* g = grads_ + b.offset;
    reqs_[next_launch_] = reduce_in_ == ReduceIn::bf16 ? comm_.all_reduce_bf16_async(g, b.numel)
                                                       : comm_.all_reduce_async(g, b.numel);
    ++next_launch_;
  }
}

void GradBuckets::mark_ready(int i) {
  if (i < 0 || i >= static_cast<int>(params_.size()))
    throw std::out_of_range("GradBuckets::mark_ready: parameter index " + std::to_string(i));
  if (ready_[i]) throw std::logic_error("GradBuckets::mark_ready: parameter " + std::to_string(i) + " marked twice");
  ready_[i] = 1;
  --pending_[bucket_of_[i]];
  launch_ready_prefix();
  // Let launched buckets advance (non-blocking): MPI and the communicator's queue progress
  // only inside calls like this, so backward overlaps communication without a thread.
  while (next_done_ < next_launch_ && reqs_[next_done_].test()) ++next_done_;
}

void GradBuckets::finish() {
  for (size_t b = next_launch_; b < buckets_.size(); ++b) pending_[b] = 0;
  launch_ready_prefix();
  for (auto& r : reqs_) {
    r.wait();
    r = CommRequest();
  }
  if (average_ && comm_.size() > 1) {
    const float s = 1.0f / static_cast<float>(comm_.size());
    float* g = grads_ + lo_;
    const int64_t n = hi_ - lo_;
    for (int64_t k = 0; k < n; ++k) g[k] *= s;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
  next_done_ = 0;
}

}  // namespace tessera
