#include "framework/model/params.h"

#include "base/error.h"
#include "base/rng.h"

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

int64_t LogicalBox::numel() const {
  int64_t n = 1;
  for (int64_t c : count) n *= c;
  return n;
}

namespace {

// Appends the run of local elements [local, local + n), which are logical elements
// li .. li + n - 1 of one row of a [rows, cols] logical tensor, to `boxes`: it extends the
// last box by a row when it continues it in both the logical tensor (same columns, next
// row) and local memory, else starts a box.
void add_run(std::vector<LogicalBox>& boxes, int64_t li, int64_t n, int64_t local, int64_t cols,
             bool two_d) {
  if (!two_d) {
    if (!boxes.empty() && boxes.back().offset[0] + boxes.back().count[0] == li &&
        boxes.back().local_begin + boxes.back().count[0] == local) {
      boxes.back().count[0] += n;
      return;
    }
    boxes.push_back({{li}, {n}, local});
    return;
  }
  const int64_t row = li / cols, col = li % cols;
  if (!boxes.empty()) {
    LogicalBox& b = boxes.back();
    if (b.offset[1] == col && b.count[1] == n && b.offset[0] + b.count[0] == row &&
        b.local_begin + b.numel() == local) {
      b.count[0] += 1;
      return;
    }
  }
  boxes.push_back({{row, col}, {1, n}, local});
}

}  // namespace

std::vector<LogicalBox> logical_boxes(const ParamInfo& p, int64_t begin, int64_t end) {
  check(0 <= begin && begin <= end && end <= p.numel,
        "logical_boxes: bad range of parameter '" + p.name + "'");
  check(p.shape.size() == 1 || p.shape.size() == 2,
        "logical_boxes: parameter '" + p.name + "' is neither 1-D nor 2-D");
  const bool two_d = p.shape.size() == 2;
  const int64_t local_cols = two_d ? p.local_shape[1] : p.numel;
  const int64_t cols = two_d ? p.shape[1] : p.logical_numel();
  std::vector<LogicalBox> boxes;
  // Row by row of the local slice (a 1-D tensor is one row); within a row the logical
  // indices of a shard are consecutive except where local padding starts (wte's rows, or
  // a 1-D slice's groups): the fast path checks the endpoints, else element by element.
  for (int64_t i = begin; i < end;) {
    const int64_t row_end = std::min(end, (i / local_cols + 1) * local_cols);
    const int64_t first = p.logical_index(i), last = p.logical_index(row_end - 1);
    const int64_t n = row_end - i;
    if (first >= 0 && last - first == n - 1 && (!two_d || first / cols == last / cols)) {
      add_run(boxes, first, n, i, cols, two_d);
      i = row_end;
      continue;
    }
    while (i < row_end) {  // runs of consecutive logical indices
      const int64_t li = p.logical_index(i);
      if (li < 0) {
        i++;
        continue;
      }
      int64_t j = i + 1;
      while (j < row_end && p.logical_index(j) == li + (j - i) && (!two_d || (li + j - i) % cols != 0))
        j++;
      add_run(boxes, li, j - i, i, cols, two_d);
      i = j;
    }
  }
  return boxes;
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
