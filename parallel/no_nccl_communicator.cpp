// parallel/nccl_communicator.h in a build without NCCL (no CUDA toolkit, TESSERA_CUDA=OFF,
// or no libnccl next to the toolkit): every function says so, so that
// parallel.backend: nccl fails with the reason rather than at link time.
#include "parallel/nccl_communicator.h"

namespace tessera {

std::string nccl_unavailable_reason() {
  return "this build of tessera has no NCCL (it was configured without nvcc, with "
         "TESSERA_CUDA=OFF, or without libnccl next to the CUDA toolkit)";
}

NcclUniqueId nccl_unique_id() { throw Error(nccl_unavailable_reason()); }

std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId&, int, int,
                                                     const NcclOptions&) {
  throw Error(nccl_unavailable_reason());
}

}  // namespace tessera
