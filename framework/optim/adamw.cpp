#include "framework/optim/adamw.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "framework/util/error.h"
#include "kernels/ops.h"

namespace tessera {

double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps) {
  if (step < optim.warmup_steps) return optim.lr * (double)(step + 1) / (double)optim.warmup_steps;
  const int64_t decay_steps = total_steps - optim.warmup_steps;
  if (decay_steps <= 1) return optim.lr;
  const double progress = (double)(step - optim.warmup_steps) / (double)(decay_steps - 1);
  return optim.min_lr + 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0))) *
                            (optim.lr - optim.min_lr);
}

double grad_norm(const float* grads, int64_t n) { return std::sqrt(kernels::sum_squares(grads, n)); }

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  return (float)std::min(1.0, max_norm / (norm + 1e-6));
}

void AdamW::FreeDeleter::operator()(float* p) const { std::free(p); }

static float* zeroed_floats(int64_t n) {
  const size_t bytes = ((size_t)n * sizeof(float) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes > 0 ? bytes : 64);
  if (!p) throw Error("out of memory allocating optimizer state");
  std::memset(p, 0, bytes);
  return static_cast<float*>(p);
}

AdamW::AdamW(const ParamTable& table, const OptimConfig& optim)
    : table_(table), optim_(optim),
      m_(zeroed_floats(table.total_numel())), v_(zeroed_floats(table.total_numel())) {}

AdamW::~AdamW() = default;

void AdamW::step(float* params, const float* grads, double lr, int64_t t, float grad_scale) {
  for (const auto& p : table_.params()) {
    const bool embedding = p.name == "wte.weight" || p.name == "wpe.weight";
    const bool decay = p.weight_decay || (embedding && optim_.decay_embeddings);
    kernels::adamw_update(params + p.offset, grads + p.offset, m_.get() + p.offset,
                          v_.get() + p.offset, p.numel, (float)lr, (float)optim_.beta1,
                          (float)optim_.beta2, (float)optim_.eps,
                          decay ? (float)optim_.weight_decay : 0.0f, t, grad_scale);
  }
}

}  // namespace tessera
