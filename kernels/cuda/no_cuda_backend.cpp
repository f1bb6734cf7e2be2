// cuda_backend() in a build without the CUDA toolkit (no nvcc, or TESSERA_CUDA=OFF): it
// says so, so that `train.device: cuda` fails with the reason rather than at link time.
#include "base/error.h"
#include "kernels/backend.h"

namespace tessera::kernels {

Backend& cuda_backend(int) {
  throw Error(
      "train.device: cuda: this build of tessera has no CUDA backend (it was configured without "
      "nvcc, or with TESSERA_CUDA=OFF); rebuild where the CUDA toolkit is on PATH, or set "
      "train.device: cpu");
}

}  // namespace tessera::kernels
