// Named parameters in one flat buffer.
//
// Every parameter has a logical name that does not depend on the parallel layout
// (`h.3.attn.qkv.weight`), a logical shape, and an offset into the flat fp32 buffers that
// hold all parameters, all gradients and the optimizer's moments side by side. One flat
// buffer makes the optimizer one loop, the gradient all-reduce one call per bucket, and
// a checkpoint a list of (name, offset, shape).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

enum class Init { Normal, Zeros, Ones };

struct ParamInfo {
  std::string name;             // logical name, e.g. "h.0.mlp.up.weight"
  std::vector<int64_t> shape;   // logical shape
  int64_t offset = 0;           // first element in the flat buffers
  int64_t numel = 0;
  bool weight_decay = false;    // AdamW decays it (2-D matrices)
  Init init = Init::Zeros;
  float init_std = 0.0f;        // for Init::Normal
};

// A list of parameters laid out back to back; offsets are aligned to 16 floats (64 bytes)
// so each tensor starts on a cache line and AVX-512 loads are aligned.
class ParamTable {
 public:
  // Appends a parameter; returns its index.
  int add(std::string name, std::vector<int64_t> shape, Init init, float init_std,
          bool weight_decay);
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& get(const std::string& name) const;  // throws if absent
  int64_t total_numel() const { return total_; }        // including alignment padding

 private:
  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
};

// Fills `values` (the flat buffer) from the counter-based RNG keyed by (seed, name), so
// each element's value depends only on (seed, name, logical index).
void init_params(const ParamTable& table, uint64_t seed, float* values);

}  // namespace tessera
