// AdamW with a cosine learning-rate schedule, linear warm-up and global-norm clipping.
#pragma once
#include <cstdint>
#include <memory>

#include "framework/model/params.h"
#include "framework/recipe/recipe.h"
#include "kernels/backend.h"
#include "kernels/buffer.h"
#include "kernels/cpu/mixed_precision.h"

namespace tessera {

// Learning rate at optimizer step `step` (0-based), as llm.c and nanoGPT define it:
// linear warm-up lr * (step+1) / warmup_steps, then cosine decay from lr to min_lr at
// the last step: min_lr + 0.5 (1 + cos(pi * progress)) (lr - min_lr),
// progress = (step - warmup) / (total_steps - warmup).
double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps);

// The global L2 norm of grads[n] (memory of `backend`).
double grad_norm(const float* grads, int64_t n,
                 kernels::Backend& backend = kernels::cpu_backend());

// The factor that clips a gradient of norm `norm` to at most max_norm, as
// torch.nn.utils.clip_grad_norm_ computes it: min(1, max_norm / (norm + 1e-6)); 1 when
// max_norm <= 0 (clipping off). AdamW::step applies it while it reads the gradient.
float clip_factor(double norm, double max_norm);

// A range [lo, hi) of elements of the flat parameter / gradient buffer.
struct FlatRange {
  int64_t lo = 0, hi = 0;
  int64_t size() const { return hi - lo; }
};

// ZeRO-1: part `rank` of a flat buffer of n floats split into `parts` equal contiguous
// ranges (n must be divisible by parts: GPTModel pads its flat buffers so that it is).
FlatRange shard_range(int64_t n, int parts, int rank);

// Whether AdamW decays parameter p: tensors marked weight_decay (the 2-D matrices), and
// wte/wpe only when optim.decay_embeddings is set.
bool decays(const ParamInfo& p, const OptimConfig& optim);

// Sums of squares of grads over the elements of `range` that belong to a parameter,
// split into tensor-parallel sharded and replicated parameters, tied copies left out
// (GPTModel::grad_norm's rule). grads: memory of `backend`.
struct SquareSums {
  double sharded = 0, replicated = 0;
};
SquareSums range_sum_squares(const ParamTable& table, const float* grads, FlatRange range,
                             kernels::Backend& backend = kernels::cpu_backend());

// AdamW over the tensors of a ParamTable, with fp32 moments in flat buffers laid out
// like the parameters. Weight decay as decays() says. It computes on `backend`, where the
// moments live and where the parameters and gradients it is given must be (the model's:
// GPTModel::backend()); the default is the CPU, as train.device's.
//
// With a range (ZeRO-1), only the elements of [range.lo, range.hi) are updated and the
// moments exist only for them: m()[i] and v()[i] belong to flat element range.lo + i.
// The range may begin and end inside a tensor; each element is decayed or not as its
// tensor is. Without one, the range is the whole table.
class AdamW {
 public:
  AdamW(const ParamTable& table, const OptimConfig& optim,
        kernels::Backend& backend = kernels::cpu_backend());
  AdamW(const ParamTable& table, const OptimConfig& optim, FlatRange range,
        kernels::Backend& backend = kernels::cpu_backend());
  ~AdamW();
  // One update with learning rate lr on the gradient grad_scale * grads; t counts
  // updates from 1 (bias correction). params and grads are the full flat buffers;
  // only the range is read and written.
  // copy16 (optional, laid out like params): also receives the updated parameters rounded
  // to the 16-bit type dt, in the same pass (mixed precision's compute copy).
  void step(float* params, const float* grads, double lr, int64_t t, float grad_scale = 1.0f,
            uint16_t* copy16 = nullptr, kernels::Dtype dt = kernels::Dtype::fp32);
  float* m() { return m_.data(); }
  float* v() { return v_.data(); }
  const FlatRange& range() const { return range_; }

 private:
  const ParamTable& table_;
  OptimConfig optim_;
  FlatRange range_;
  kernels::Backend& backend_;
  // 64-byte aligned on ordinary pages, first touched by the zeroing on this thread.
  kernels::Buffer<float> m_, v_;
};

}  // namespace tessera
