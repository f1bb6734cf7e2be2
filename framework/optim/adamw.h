// AdamW with a cosine learning-rate schedule, linear warm-up and global-norm clipping.
#pragma once
#include <cstdint>
#include <memory>

#include "framework/model/params.h"
#include "framework/recipe/recipe.h"

namespace tessera {

// Learning rate at optimizer step `step` (0-based), as llm.c and nanoGPT define it:
// linear warm-up lr * (step+1) / warmup_steps, then cosine decay from lr to min_lr at
// the last step: min_lr + 0.5 (1 + cos(pi * progress)) (lr - min_lr),
// progress = (step - warmup) / (total_steps - warmup).
double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps);

// The global L2 norm of grads[n].
double grad_norm(const float* grads, int64_t n);

// The factor that clips a gradient of norm `norm` to at most max_norm, as
// torch.nn.utils.clip_grad_norm_ computes it: min(1, max_norm / (norm + 1e-6)); 1 when
// max_norm <= 0 (clipping off). AdamW::step applies it while it reads the gradient.
float clip_factor(double norm, double max_norm);

// AdamW over every tensor of a ParamTable, with fp32 moments in flat buffers laid out
// like the parameters. Weight decay applies to tensors marked weight_decay (the 2-D
// matrices), and to wte/wpe only when optim.decay_embeddings is set.
class AdamW {
 public:
  AdamW(const ParamTable& table, const OptimConfig& optim);
  ~AdamW();
  // One update with learning rate lr on the gradient grad_scale * grads; t counts
  // updates from 1 (bias correction).
  void step(float* params, const float* grads, double lr, int64_t t, float grad_scale = 1.0f);
  float* m() { return m_.get(); }
  float* v() { return v_.get(); }

 private:
  const ParamTable& table_;
  OptimConfig optim_;
  struct FreeDeleter {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], FreeDeleter> m_, v_;
};

}  // namespace tessera
