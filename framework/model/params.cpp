#include "framework/model/params.h"

#include "framework/util/error.h"
#include "parallel/rng.h"

namespace tessera {

int64_t ParamInfo::logical_numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t ParamInfo::logical_index(int64_t i) const {
  if (shard.split_dim < 0) return i;
  const int d = shard.split_dim;
  int64_t inner = 1;
  for (size_t k = d + 1; k < shape.size(); k++) inner *= shape[k];
  const int64_t S = shape[d], block = S / shard.groups, local_d = local_shape[d];
  const int64_t piece = local_d / shard.groups;  // ceil(block / tp_size)
  const int64_t in = i % inner, j = (i / inner) % local_d, outer = i / inner / local_d;
  const int64_t g = j / piece, within = shard.tp_rank * piece + j % piece;
  if (within >= block) return -1;
  return (outer * S + g * block + within) * inner + in;
}

int ParamTable::add(std::string name, std::vector<int64_t> shape, Init init, float init_std,
                    bool weight_decay, ShardSpec shard) {
  ParamInfo info;
  info.name = std::move(name);
  info.shape = std::move(shape);
  info.local_shape = info.shape;
  if (shard.split_dim >= 0) {
    check(shard.split_dim < (int)info.shape.size() && shard.groups >= 1 && shard.tp_size >= 1 &&
              shard.tp_rank >= 0 && shard.tp_rank < shard.tp_size &&
              info.shape[shard.split_dim] % shard.groups == 0,
          "bad shard spec for parameter '" + info.name + "'");
    const int64_t block = info.shape[shard.split_dim] / shard.groups;
    info.local_shape[shard.split_dim] = shard.groups * ((block + shard.tp_size - 1) / shard.tp_size);
  }
  info.shard = shard;
  info.numel = 1;
  for (int64_t d : info.local_shape) info.numel *= d;
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
    const CounterRng rng(seed, p.name);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < p.numel; i++) {
      const int64_t li = p.logical_index(i);
      if (li < 0) {
        out[i] = 0.0f;  // local padding
        continue;
      }
      switch (p.init) {
        case Init::Zeros: out[i] = 0.0f; break;
        case Init::Ones: out[i] = 1.0f; break;
        case Init::Normal: out[i] = p.init_std * rng.normal((uint64_t)li); break;
      }
    }
  }
}

}  // namespace tessera
