#include "framework/optim/adamw.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <algorithm>

#include "base/error.h"

namespace tessera {

double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps) {
  if (step < optim.warmup_steps) return optim.lr * (double)(step + 1) / (double)optim.warmup_steps;
  const int64_t decay_steps = total_steps - optim.warmup_steps;
  if (decay_steps <= 1) return optim.lr;
  const double progress = (double)(step - optim.warmup_steps) / (double)(decay_steps - 1);
  return optim.min_lr + 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0))) *
                            (optim.lr - optim.min_lr);
}

double grad_norm(const float* grads, int64_t n, kernels::Backend& backend) {
  return std::sqrt(backend.sum_squares(grads, n));
}

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  return (float)std::min(1.0, max_norm / (norm + 1e-6));
}

FlatRange shard_range(int64_t n, int parts, int rank) {
  check(parts >= 1 && rank >= 0 && rank < parts, "shard_range: bad rank/parts");
  check(n % parts == 0, "shard_range: flat size " + std::to_string(n) +
                            " is not divisible by " + std::to_string(parts));
  const int64_t s = n / parts;
  return {rank * s, (rank + 1) * s};
}

bool decays(const ParamInfo& p, const OptimConfig& optim) {
  const bool embedding =
      p.name == "wte.weight" || p.name == "wpe.weight" || p.name == "tok_embeddings.weight";
  return p.weight_decay || (embedding && optim.decay_embeddings);
}

namespace {
// The part [a, b) of parameter p inside range r; a >= b when they do not overlap.
std::pair<int64_t, int64_t> overlap(const ParamInfo& p, FlatRange r) {
  return {std::max(p.offset, r.lo), std::min(p.offset + p.numel, r.hi)};
}
}  // namespace

SquareSums range_sum_squares(const ParamTable& table, const float* grads, FlatRange range,
                             kernels::Backend& backend) {
  std::vector<std::pair<const float*, int64_t>> spans;  // local tp padding: 0
  std::vector<bool> sharded;
  for (const auto& p : table.params()) {
    const auto [a, b] = overlap(p, range);
    if (a >= b || p.tied_copy) continue;  // a tied copy counts on the stage that owns it
    spans.emplace_back(grads + a, b - a);
    sharded.push_back(p.shard.sharded());
  }
  const std::vector<double> sums = backend.sum_squares_each(spans);
  SquareSums s;
  for (size_t i = 0; i < sums.size(); i++) (sharded[i] ? s.sharded : s.replicated) += sums[i];
  return s;
}

AdamW::AdamW(const ParamTable& table, const OptimConfig& optim, kernels::Backend& backend)
    : AdamW(table, optim, FlatRange{0, table.total_numel()}, backend) {}

AdamW::AdamW(const ParamTable& table, const OptimConfig& optim, FlatRange range,
             kernels::Backend& backend)
    : table_(table), optim_(optim), range_(range), backend_(backend),
      m_(backend.allocate<float>(range.size(), kernels::Pages::normal)),
      v_(backend.allocate<float>(range.size(), kernels::Pages::normal)) {
  check(range.lo >= 0 && range.hi >= range.lo, "AdamW: bad range");
}

AdamW::~AdamW() = default;

void AdamW::step(float* params, const float* grads, double lr, int64_t t, float grad_scale,
                 uint16_t* copy16, kernels::Dtype dt) {
  for (const auto& p : table_.params()) {
    const auto [a, b] = overlap(p, range_);
    if (a >= b) continue;
    float* m = m_.data() + (a - range_.lo);
    float* v = v_.data() + (a - range_.lo);
    const float decay = decays(p, optim_) ? (float)optim_.weight_decay : 0.0f;
    if (copy16)
      backend_.adamw_update_with_copy(params + a, grads + a, m, v, b - a, (float)lr,
                                      (float)optim_.beta1, (float)optim_.beta2,
                                      (float)optim_.eps, decay, t, grad_scale, copy16 + a, dt);
    else
      backend_.adamw_update(params + a, grads + a, m, v, b - a, (float)lr, (float)optim_.beta1,
                            (float)optim_.beta2, (float)optim_.eps, decay, t, grad_scale);
  }
}

}  // namespace tessera
