// The grid and random samplers, and the choice of sampler (TPE is in tuning/tpe.cpp).
#include "tuning/samplers.h"

#include "base/rng.h"
#include "tuning/tpe.h"

namespace tessera::tuning {

double uniform_draw(uint64_t seed, int trial_id, const std::string& key, uint64_t index) {
  // Philox keyed by (seed, parameter name), counter (trial, index): 53 random bits.
  const uint64_t name = fnv1a64(key) ^ (seed * 0x9E3779B97F4A7C15ull);
  const auto r = philox4x32({(uint32_t)trial_id, (uint32_t)index, (uint32_t)(index >> 32), 0x5eed},
                            {(uint32_t)name, (uint32_t)(name >> 32)});
  const uint64_t bits = ((uint64_t)r[0] << 21) ^ (uint64_t)r[1];
  return (double)(bits & ((1ull << 53) - 1)) / 9007199254740992.0;  // / 2^53
}

namespace {

class GridSampler : public Sampler {
 public:
  explicit GridSampler(const SweepSpec& spec) : points_(grid_points(spec.space, spec.source)) {}
  std::optional<Assignment> sample(int trial_id, const std::vector<Observation>&) override {
    if (trial_id < 0 || (size_t)trial_id >= points_.size()) return std::nullopt;
    return points_[(size_t)trial_id];
  }
  int64_t capacity() const override { return (int64_t)points_.size(); }

 private:
  std::vector<Assignment> points_;
};

class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(const SweepSpec& spec) : space_(spec.space), seed_(spec.sampler.seed) {}
  std::optional<Assignment> sample(int trial_id, const std::vector<Observation>&) override {
    Assignment a = nlohmann::json::object();
    for (const Param& p : space_) a[p.key] = value_at(p, uniform_draw(seed_, trial_id, p.key));
    return a;
  }

 private:
  SearchSpace space_;
  uint64_t seed_;
};

}  // namespace

std::unique_ptr<Sampler> make_sampler(const SweepSpec& spec) {
  switch (spec.sampler.kind) {
    case SamplerKind::grid: return std::make_unique<GridSampler>(spec);
    case SamplerKind::random: return std::make_unique<RandomSampler>(spec);
    case SamplerKind::tpe: return make_tpe_sampler(spec);
  }
  return nullptr;
}

}  // namespace tessera::tuning
