#include "kernels/backend.h"

namespace tessera::kernels {

Backend& backend_for(Device device) {
  if (device == Device::cuda) return cuda_backend();
  return cpu_backend();
}

}  // namespace tessera::kernels
