// backend_for: compiled into each of the backend libraries an executable chooses from
// (kernels/CMakeLists.txt), next to the cuda_backend() it returns.
#include "kernels/backend.h"

namespace tessera::kernels {

Backend& backend_for(Device device, int local_rank) {
  if (device == Device::cuda) return cuda_backend(local_rank);
  return cpu_backend();
}

}  // namespace tessera::kernels
