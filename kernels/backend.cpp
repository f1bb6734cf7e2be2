// What every backend has unless it overrides it: no flash attention.
#include "kernels/backend.h"

#include <string>

#include "base/error.h"

namespace tessera::kernels {

bool Backend::flash_attention_supported(int, int) const { return false; }

void Backend::flash_attention_forward(float*, float*, const float*, int, int, int, int) {
  throw Error(std::string("flash attention: the ") + to_string(device()) + " backend has none");
}

void Backend::flash_attention_backward(float*, const float*, const float*, const float*,
                                       const float*, int, int, int, int) {
  throw Error(std::string("flash attention: the ") + to_string(device()) + " backend has none");
}

}  // namespace tessera::kernels
