// Dynamic loss scaling for fp16 training (Micikevicius et al., 2018; the rule of
// torch.cuda.amp.GradScaler and Megatron-LM).
//
// fp16's largest finite value is 65504 and its smallest normal 6.1e-5: gradients of a
// mean loss are mostly far below that range. The trainer multiplies the loss (in
// practice, its gradient seed) by `scale` so the backward pass's fp16 values use the
// range, then divides the fp32 gradients by it before clipping and AdamW. When any
// gradient on any rank has overflowed (inf or NaN), the step is skipped: no update, the
// scale halves. After `window` good steps in a row the scale doubles again.
#pragma once
#include <cstdint>

#include <nlohmann/json.hpp>

namespace tessera {

class LossScaler {
 public:
  // enabled = false (fp32, bf16): scale() is always 1 and no step is skipped.
  LossScaler(bool enabled, double initial_scale, int64_t window);

  double scale() const { return scale_; }

  // After a step's gradients are complete. `all_finite`: no rank saw an inf or NaN (the
  // caller agrees it across ranks, so every rank decides the same). Returns whether to
  // apply the step. Throws tessera::Error if the scale falls below 2^-24: the overflow
  // does not come from the scale (the loss or the activations are not finite).
  bool update(bool all_finite);

  int64_t skipped_steps() const { return skipped_; }

  // For checkpoints: {"scale", "good_steps", "skipped_steps"}; restore() reads it back.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

 private:
  bool enabled_;
  double scale_;
  int64_t window_;
  int64_t good_steps_ = 0;  // since the last overflow or doubling
  int64_t skipped_ = 0;
};

}  // namespace tessera
