#include "framework/optim/loss_scaler.h"

#include <cmath>
#include <string>

#include "base/error.h"

namespace tessera {

LossScaler::LossScaler(bool enabled, double initial_scale, int64_t window)
    : enabled_(enabled), scale_(enabled ? initial_scale : 1.0), window_(window) {
  check(!enabled || (initial_scale > 0 && std::isfinite(initial_scale)),
        "train.loss_scale must be a positive finite number");
  check(window >= 1, "train.loss_scale_window must be >= 1");
}

bool LossScaler::update(bool all_finite) {
  if (!enabled_) return true;
  if (!all_finite) {
    scale_ /= 2;
    good_steps_ = 0;
    skipped_++;
    check(scale_ >= std::ldexp(1.0, -24),
          "fp16 gradients overflow at every loss scale down to " + std::to_string(scale_) +
              ": the loss or the activations are not finite (lower optim.lr, or use bf16)");
    return false;
  }
  if (++good_steps_ >= window_) {
    scale_ *= 2;
    good_steps_ = 0;
  }
  return true;
}

nlohmann::json LossScaler::state() const {
  return {{"scale", scale_}, {"good_steps", good_steps_}, {"skipped_steps", skipped_}};
}

void LossScaler::restore(const nlohmann::json& state) {
  if (!enabled_ || !state.is_object() || !state.contains("scale")) return;
  scale_ = state.at("scale").get<double>();
  good_steps_ = state.value("good_steps", int64_t{0});
  skipped_ = state.value("skipped_steps", int64_t{0});
}

}  // namespace tessera
