// What every backend has unless it overrides it: no flash or cuDNN attention, no Llama ops.
#include "kernels/backend.h"

#include <string>

#include "base/error.h"

namespace tessera::kernels {

bool Backend::flash_attention_supported(int, int) const { return false; }

std::vector<double> Backend::sum_squares_each(
    const std::vector<std::pair<const float*, int64_t>>& spans) {
  std::vector<double> sums;
  sums.reserve(spans.size());
  for (const auto& [x, n] : spans) sums.push_back(sum_squares(x, n));
  return sums;
}

void Backend::flash_attention_forward(float*, float*, const float*, int, int, int, int) {
  throw Error(std::string("flash attention: the ") + to_string(device()) + " backend has none");
}

void Backend::flash_attention_backward(float*, const float*, const float*, const float*,
                                       const float*, int, int, int, int) {
  throw Error(std::string("flash attention: the ") + to_string(device()) + " backend has none");
}

std::string Backend::cudnn_attention_prepare(int, int, int, int) {
  return std::string("the ") + to_string(device()) + " backend has no cuDNN";
}

void Backend::cudnn_attention_forward(float*, float*, const float*, int, int, int, int) {
  throw Error(std::string("cuDNN attention: the ") + to_string(device()) + " backend has none");
}

void Backend::cudnn_attention_backward(float*, const float*, const float*, const float*,
                                       const float*, int, int, int, int) {
  throw Error(std::string("cuDNN attention: the ") + to_string(device()) + " backend has none");
}

bool Backend::has_llama_ops() const { return false; }

namespace {
[[noreturn]] void no_llama_op(const Backend& backend, const char* op) {
  throw Error(std::string(op) + ": the " + to_string(backend.device()) +
              " backend has no kernels for the llama family (it trains on the cpu)");
}
}  // namespace

void Backend::gqa_attention_forward(float*, float*, const float*, const float*, const float*, int,
                                    int, int, int, int, int, int) {
  no_llama_op(*this, "gqa_attention_forward");
}
void Backend::gqa_attention_backward(float*, float*, float*, const float*, const float*,
                                     const float*, const float*, const float*, int, int, int, int,
                                     int, int, int) {
  no_llama_op(*this, "gqa_attention_backward");
}
void Backend::rope_forward(float*, const float*, const float*, int, int, int, int, int) {
  no_llama_op(*this, "rope_forward");
}
void Backend::rope_backward(float*, const float*, const float*, int, int, int, int, int) {
  no_llama_op(*this, "rope_backward");
}
void Backend::rmsnorm_forward(float*, float*, const float*, const float*, int, int, float) {
  no_llama_op(*this, "rmsnorm_forward");
}
void Backend::rmsnorm_backward(float*, float*, const float*, const float*, const float*,
                               const float*, int, int) {
  no_llama_op(*this, "rmsnorm_backward");
}
void Backend::swiglu_forward(float*, const float*, const float*, int64_t) {
  no_llama_op(*this, "swiglu_forward");
}
void Backend::swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t) {
  no_llama_op(*this, "swiglu_backward");
}

}  // namespace tessera::kernels
