// Named parameters in one flat buffer.
//
// Every parameter has a logical name that does not depend on the parallel layout
// (`h.3.attn.qkv.weight`), a logical shape, a shard spec saying which slice of the logical
// tensor this rank holds, and an offset into the flat fp32 buffers that hold all of this
// rank's parameters, all gradients and the optimizer's moments side by side. One flat
// buffer makes the optimizer one loop, the gradient all-reduce one call per bucket, and
// a checkpoint a list of (name, offset, shape).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

enum class Init { Normal, Zeros, Ones };

// How this rank's local tensor is a slice of the logical one (tensor parallelism).
//
// split_dim < 0: replicated, the local tensor is the logical tensor.
// Otherwise dimension split_dim (logical size S) is viewed as `groups` consecutive
// blocks of S / groups (groups = 3 for the fused q|k|v rows of attn.qkv, else 1), and
// each block is split into tp_size pieces of ceil((S / groups) / tp_size): tp rank r
// holds piece r of every block, the blocks one after another. When the block does not
// divide evenly (only the padded vocabulary of wte can), the last ranks' pieces run past
// the logical tensor: those local rows are local padding, zero, not part of the logical
// tensor, and never affect the model (see docs/parallel.md).
struct ShardSpec {
  int split_dim = -1;  // -1: replicated
  int groups = 1;
  int tp_rank = 0, tp_size = 1;
  bool sharded() const { return split_dim >= 0 && tp_size > 1; }
};

struct ParamInfo {
  std::string name;                  // logical name, e.g. "h.0.mlp.up.weight"
  std::vector<int64_t> shape;        // logical shape
  std::vector<int64_t> local_shape;  // this rank's slice (== shape when replicated)
  ShardSpec shard;
  int64_t offset = 0;                // first element in the flat buffers
  int64_t numel = 0;                 // local elements (prod(local_shape))
  bool weight_decay = false;         // AdamW decays it (2-D matrices)
  Init init = Init::Zeros;
  float init_std = 0.0f;             // for Init::Normal
  // A copy of a parameter that another pipeline stage owns (the last stage's wte, the
  // LM head tied to the first stage's embedding): kept equal to it, so it is left out of
  // anything counted once per logical parameter (the gradient norm, checkpoints).
  bool tied_copy = false;

  int64_t logical_numel() const;
  // The logical (row-major, unsharded) element index of local element i, or -1 when i
  // is local padding outside the logical tensor.
  int64_t logical_index(int64_t i) const;
};

// A box of a logical tensor: elements offset[d] .. offset[d] + count[d] - 1 along every
// dimension d, held contiguously (C order) in a rank's local slice from local element
// local_begin on. Checkpoints write and read tensors as such boxes.
struct LogicalBox {
  std::vector<int64_t> offset, count;
  int64_t local_begin = 0;
  int64_t numel() const;
  bool operator==(const LogicalBox&) const = default;
};

// The local elements [begin, end) of p (its tp slice, C order) as boxes of the logical
// tensor, in local order, local padding left out: one box for a whole unsharded tensor or
// a row-split slice, one per group for the fused q|k|v rows, more where a range (ZeRO-1)
// starts or ends inside a row. 1-D and 2-D tensors.
std::vector<LogicalBox> logical_boxes(const ParamInfo& p, int64_t begin, int64_t end);

// A list of parameters laid out back to back; offsets are aligned to 16 floats (64 bytes)
// so each tensor starts on a cache line and AVX-512 loads are aligned.
class ParamTable {
 public:
  // Appends a parameter; returns its index. `shard` describes this rank's slice
  // (default: replicated); the local shape follows from it.
  int add(std::string name, std::vector<int64_t> shape, Init init, float init_std,
          bool weight_decay, ShardSpec shard = {});
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& get(const std::string& name) const;  // throws if absent
  void set_tied_copy(int index, bool tied) { params_.at(index).tied_copy = tied; }
  int64_t total_numel() const { return total_; }        // including alignment padding

 private:
  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
};

// Fills `values` (the flat buffer) from the counter-based RNG keyed by (seed, name), so
// each element's value depends only on (seed, name, LOGICAL index): every tp layout
// starts from the same logical weights. Local padding is zero.
void init_params(const ParamTable& table, uint64_t seed, float* values);

}  // namespace tessera
