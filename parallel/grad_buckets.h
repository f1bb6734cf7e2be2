// GradBuckets: data-parallel gradient synchronisation that overlaps backward.
//
// The flat gradient buffer holds the parameters contiguously in forward order. Backward
// produces gradients roughly in reverse order, so the caller lists the parameters as
// (offset, numel) in the order their gradients become ready. Consecutive parameters of that
// list are grouped into buckets of at most bucket_mb MiB (a parameter larger than that gets
// its own bucket); each bucket must be a contiguous range of the flat buffer (checked).
//
// Per step:
//   mark_ready(i) for each parameter i (index into the list) once its gradient is final;
//   when every parameter of a bucket is ready, that bucket's all_reduce_async starts.
//   Buckets are launched strictly in bucket order (bucket k only after 0..k-1), so ranks
//   that mark in different orders still issue identical collective sequences (no mismatch
//   or deadlock), as PyTorch DDP does.
//   finish(): launches any bucket not yet launched (parameters never marked, e.g. unused
//   ones, are reduced as they are), waits for all, and — if average (default) — scales the
//   whole buffer by 1/size() so it holds the mean gradient over data-parallel ranks; with
//   average=false it holds the sum. Then resets for the next step.
// reduce_in = ReduceIn::bf16 reduces with the communicator's all_reduce_bf16_async (bf16 on
// the wire, half the bytes; parallel.grad_reduce = bf16): the buffer stays fp32, each
// bucket is rounded to bf16 chunk by chunk inside the communicator, and finish() leaves
// the bf16 ring's sum (widened to fp32, then averaged) in it.
// The gradient range of a launched bucket must not be written until finish() returns.
// The constructor backs the gradient range with transparent huge pages when size() > 1
// (base/huge_pages.h): contents unchanged, about 1.4 s once for GPT-2 124M.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace tessera {

enum class ReduceIn { fp32, bf16 };

struct ParamSpan {
  int64_t offset = 0;  // elements into the flat buffer
  int64_t numel = 0;
};

class GradBuckets {
 public:
  struct Bucket {
    int64_t offset = 0, numel = 0;  // range of the flat buffer
    std::vector<int> params;        // indices into the ready-order list
  };

  GradBuckets(Communicator& comm, float* grads, std::vector<ParamSpan> ready_order,
              double bucket_mb = 25.0, bool average = true, ReduceIn reduce_in = ReduceIn::fp32);

  void mark_ready(int param_index);
  void finish();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  int num_launched() const { return next_launch_; }

 private:
  void launch_ready_prefix();

  Communicator& comm_;
  float* grads_;
  std::vector<ParamSpan> params_;
  bool average_;
  ReduceIn reduce_in_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;   // param -> bucket
  std::vector<int> pending_;     // per bucket: params not yet ready
  std::vector<char> ready_;      // per param
  std::vector<CommRequest> reqs_;
  int next_launch_ = 0;
  int next_done_ = 0;            // buckets before this one have completed
  int64_t lo_ = 0, hi_ = 0;      // union range of all params
};

}  // namespace tessera
