#include "framework/model/params.h"

#include "framework/util/error.h"
#include "parallel/rng.h"

namespace tessera {

int ParamTable::add(std::string name, std::vector<int64_t> shape, Init init, float init_std,
                    bool weight_decay) {
  ParamInfo info;
  info.name = std::move(name);
  info.shape = std::move(shape);
  info.numel = 1;
  for (int64_t d : info.shape) info.numel *= d;
  info.offset = total_;
  info.init = init;
  info.init_std = init_std;
  info.weight_decay = weight_decay;
  total_ += (info.numel + 15) / 16 * 16;
  params_.push_back(std::move(info));
  return (int)params_.size() - 1;
}

const ParamInfo& ParamTable::get(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return p;
  throw Error("no parameter named '" + name + "'");
}

void init_params(const ParamTable& table, uint64_t seed, float* values) {
  for (const auto& p : table.params()) {
    float* out = values + p.offset;
    switch (p.init) {
      case Init::Zeros:
        for (int64_t i = 0; i < p.numel; i++) out[i] = 0.0f;
        break;
      case Init::Ones:
        for (int64_t i = 0; i < p.numel; i++) out[i] = 1.0f;
        break;
      case Init::Normal: {
        const CounterRng rng(seed, p.name);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < p.numel; i++) out[i] = p.init_std * rng.normal((uint64_t)i);
        break;
      }
    }
  }
}

}  // namespace tessera
