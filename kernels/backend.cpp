#include "kernels/backend.h"

#include <string>

#include "base/error.h"

namespace tessera::kernels {

Backend& backend_for(Device device) {
  if (device == Device::cpu) return cpu_backend();
  throw Error(std::string("no backend for device ") + to_string(device) +
              " in this build (the CUDA backend's kernels exist, its Backend does not yet)");
}

}  // namespace tessera::kernels
