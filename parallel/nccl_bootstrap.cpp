// make_nccl_communicator from a bootstrap communicator (parallel/nccl_communicator.h): the
// unique id made by rank 0 and broadcast over the bootstrap. The same in every build: one
// without NCCL throws nccl_unique_id's reason on every rank.
#include "parallel/nccl_communicator.h"

namespace tessera {

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap,
                                                     const NcclOptions& options) {
  // Rank 0's error message, if it could not make an id (its length agreed first, so that
  // every rank throws it), else the id.
  std::string error;
  NcclUniqueId id;
  if (bootstrap.rank() == 0) {
    try {
      id = nccl_unique_id();
    } catch (const Error& e) {
      error = e.what();
    }
  }
  int64_t error_bytes = (int64_t)error.size();
  bootstrap.all_reduce(&error_bytes, 1, ScalarType::i64, ReduceOp::max);
  if (error_bytes > 0) {
    error.resize((size_t)error_bytes);
    bootstrap.broadcast_bytes(error.data(), error_bytes, 0);
    throw CommError(error);
  }
  bootstrap.broadcast_bytes(id.bytes, sizeof(id.bytes), 0);
  return make_nccl_communicator(id, bootstrap.size(), bootstrap.rank(), options);
}

}  // namespace tessera
