// The NCCL emulator over MPI (see nccl_emulator.h for what it is and is not).
#include "kernels/cuda/emulator/nccl_emulator.h"

#include <mpi.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/cast_bf16.h"

struct ncclComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::string last_error;
};

namespace {

constexpr char kMagic[] = "tessera-nccl-emulator";
constexpr int kInitTagBase = 20000;  // + the id's counter modulo kInitTags
constexpr int kInitTags = 4096;

// What ncclGetUniqueId writes into the id's bytes.
struct IdContents {
  char magic[sizeof(kMagic)];
  int creator_world_rank;
  int counter;
};
static_assert(sizeof(IdContents) <= NCCL_UNIQUE_ID_BYTES);

struct PendingP2p {
  bool send;
  void* buf;
  size_t bytes;
  int peer;
  ncclComm* comm;
  cudaStream_t stream;
};
int group_depth = 0;
std::vector<PendingP2p> group_p2p;

size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}

template <typename T>
T combine(T a, T b, ncclRedOp_t op) {
  return op == ncclSum ? a + b : op == ncclMax ? (a > b ? a : b) : (a < b ? a : b);
}

template <typename T>
void reduce_typed(void* acc, const void* in, size_t n, ncclRedOp_t op) {
  T* a = static_cast<T*>(acc);
  const T* b = static_cast<const T*>(in);
  for (size_t i = 0; i < n; i++) a[i] = combine(a[i], b[i], op);
}

// acc = acc (op) in, element-wise; bf16 widens to fp32 and rounds back to nearest
// even after every combination (a partial sum is kept in the type, as NCCL does). fp16
// is not emulated: nothing of Tessera's reduces it over NCCL.
bool reduce_into(void* acc, const void* in, size_t n, ncclDataType_t t, ncclRedOp_t op) {
  using namespace tessera::kernels;
  switch (t) {
    case ncclInt8: reduce_typed<int8_t>(acc, in, n, op); return true;
    case ncclUint8: reduce_typed<uint8_t>(acc, in, n, op); return true;
    case ncclInt32: reduce_typed<int32_t>(acc, in, n, op); return true;
    case ncclUint32: reduce_typed<uint32_t>(acc, in, n, op); return true;
    case ncclInt64: reduce_typed<int64_t>(acc, in, n, op); return true;
    case ncclUint64: reduce_typed<uint64_t>(acc, in, n, op); return true;
    case ncclFloat32: reduce_typed<float>(acc, in, n, op); return true;
    case ncclFloat64: reduce_typed<double>(acc, in, n, op); return true;
    case ncclBfloat16: {
      bf16* a = static_cast<bf16*>(acc);
      const bf16* b = static_cast<const bf16*>(in);
      for (size_t i = 0; i < n; i++)
        a[i] = fp32_to_bf16(combine(bf16_to_fp32(a[i]), bf16_to_fp32(b[i]), op));
      return true;
    }
    case ncclFloat16: return false;  // not used by Tessera's communicator
  }
  return false;
}

ncclResult_t fail(ncclComm* comm, ncclResult_t result, const std::string& why) {
  if (comm) comm->last_error = why;
  return result;
}

bool mpi_ok(int err) { return err == MPI_SUCCESS; }

bool valid(ncclComm* comm) { return comm && comm->comm != MPI_COMM_NULL; }

// Every rank's `bytes` from `send`, in rank order.
bool gather_all(ncclComm* comm, const void* send, size_t bytes, std::vector<char>& all) {
  all.resize(bytes * (size_t)comm->size);
  return mpi_ok(MPI_Allgather(send, (int)bytes, MPI_BYTE, all.data(), (int)bytes, MPI_BYTE,
                              comm->comm));
}

// out[0..n) = the combination over ranks, in rank order, of each rank's [offset, offset+n).
ncclResult_t reduce_gathered(ncclComm* comm, const std::vector<char>& all, size_t rank_bytes,
                             size_t offset_elems, size_t n, ncclDataType_t t, ncclRedOp_t op,
                             void* out) {
  const size_t eb = type_bytes(t);
  std::vector<char> acc(all.begin() + (ptrdiff_t)(offset_elems * eb),
                        all.begin() + (ptrdiff_t)((offset_elems + n) * eb));
  for (int r = 1; r < comm->size; r++)
    if (!reduce_into(acc.data(), all.data() + r * rank_bytes + offset_elems * eb, n, t, op))
      return fail(comm, ncclInvalidArgument, "unsupported data type");
  if (n) std::memcpy(out, acc.data(), n * eb);
  return ncclSuccess;
}

// Where an operation on `stream` puts its `bytes` of results for `out`: a staging copy,
// which reaches `out` only once something is ordered after the operation
// (emulator::land_later; at once on the legacy default stream). A program that reads the
// results without waiting for the operation reads out's old contents.
class ResultsInFlight {
 public:
  ResultsInFlight(void* out, size_t bytes, cudaStream_t stream)
      : out_(out), stream_(stream), staged_(std::make_shared<std::vector<char>>(bytes)) {}
  void* data() { return staged_->data(); }
  // The operation succeeded: its results will land.
  void complete() {
    tessera::kernels::cuda::emulator::land_later(
        stream_, [out = out_, staged = staged_] {
          if (!staged->empty()) std::memcpy(out, staged->data(), staged->size());
        });
  }

 private:
  void* out_;
  cudaStream_t stream_;
  std::shared_ptr<std::vector<char>> staged_;
};

ncclResult_t check_args(ncclComm* comm, ncclDataType_t t, ncclRedOp_t op) {
  if (!valid(comm)) return fail(comm, ncclInvalidArgument, "invalid communicator");
  if (type_bytes(t) == 0) return fail(comm, ncclInvalidArgument, "invalid data type");
  if (op != ncclSum && op != ncclMax && op != ncclMin)
    return fail(comm, ncclInvalidArgument, "the emulator reduces with sum, max and min only");
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return ncclInvalidUsage;
  static int counter = 0;
  IdContents id{};
  std::memcpy(id.magic, kMagic, sizeof(kMagic));
  MPI_Comm_rank(MPI_COMM_WORLD, &id.creator_world_rank);
  id.counter = counter++;
  std::memset(unique_id, 0, sizeof(*unique_id));
  std::memcpy(unique_id->internal, &id, sizeof(id));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId unique_id, int rank) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  IdContents id;
  std::memcpy(&id, unique_id.internal, sizeof(id));
  if (!initialized || std::memcmp(id.magic, kMagic, sizeof(kMagic)) != 0 || nranks < 1 ||
      rank < 0 || rank >= nranks)
    return ncclInvalidArgument;
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  const int tag = kInitTagBase + id.counter % kInitTags;
  // The member table (world rank of each rank), assembled by the id's creator.
  std::vector<int> members((size_t)nranks, -1);
  if (world_rank == id.creator_world_rank) {
    members[(size_t)rank] = world_rank;
    for (int i = 1; i < nranks; i++) {
      int msg[2];
      if (!mpi_ok(MPI_Recv(msg, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE)))
        return ncclSystemError;
      if (msg[0] < 0 || msg[0] >= nranks || members[(size_t)msg[0]] != -1)
        return ncclInvalidUsage;  // two processes claimed one rank
      members[(size_t)msg[0]] = msg[1];
    }
    for (int r = 0; r < nranks; r++)
      if (r != rank &&
          !mpi_ok(MPI_Send(members.data(), nranks, MPI_INT, members[(size_t)r], tag,
                           MPI_COMM_WORLD)))
        return ncclSystemError;
  } else {
    const int msg[2] = {rank, world_rank};
    if (!mpi_ok(MPI_Send(msg, 2, MPI_INT, id.creator_world_rank, tag, MPI_COMM_WORLD)) ||
        !mpi_ok(MPI_Recv(members.data(), nranks, MPI_INT, id.creator_world_rank, tag,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE)))
      return ncclSystemError;
  }
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  MPI_Group_incl(world_group, nranks, members.data(), &group);
  auto* comm = new ncclComm;
  const int err = MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &comm->comm);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  if (!mpi_ok(err)) {
    delete comm;
    return ncclSystemError;
  }
  comm->rank = rank;
  comm->size = nranks;
  *out = comm;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId unique_id, int rank,
                                    ncclConfig_t* config) {
  if (config != nullptr && config->blocking != 1 && config->blocking != NCCL_CONFIG_UNDEF_INT)
    return ncclInvalidArgument;
  return ncclCommInitRank(out, nranks, unique_id, rank);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  if (comm->comm != MPI_COMM_NULL) MPI_Comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}

// NCCL's abort does not wait for the peers; neither does this (MPI_Comm_free would be
// collective, so the MPI communicator is left to MPI_Finalize).
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm) return ncclInvalidArgument;
  *async_error = ncclSuccess;  // every call communicates at once: errors are returned
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : ""; }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  tessera::kernels::cuda::emulator::land_pending(stream);  // its inputs, written before
  if (ncclResult_t r = check_args(comm, datatype, op); r != ncclSuccess) return r;
  const size_t bytes = count * type_bytes(datatype);
  std::vector<char> all;
  if (!gather_all(comm, sendbuff, bytes, all))
    return fail(comm, ncclSystemError, "MPI_Allgather failed");
  ResultsInFlight results(recvbuff, bytes, stream);
  const ncclResult_t r = reduce_gathered(comm, all, bytes, 0, count, datatype, op, results.data());
  if (r == ncclSuccess) results.complete();
  return r;
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  tessera::kernels::cuda::emulator::land_pending(stream);  // its inputs, written before
  if (ncclResult_t r = check_args(comm, datatype, op); r != ncclSuccess) return r;
  const size_t bytes = recvcount * (size_t)comm->size * type_bytes(datatype);
  std::vector<char> all;
  if (!gather_all(comm, sendbuff, bytes, all))
    return fail(comm, ncclSystemError, "MPI_Allgather failed");
  ResultsInFlight results(recvbuff, recvcount * type_bytes(datatype), stream);
  const ncclResult_t r = reduce_gathered(comm, all, bytes, recvcount * (size_t)comm->rank,
                                         recvcount, datatype, op, results.data());
  if (r == ncclSuccess) results.complete();
  return r;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  tessera::kernels::cuda::emulator::land_pending(stream);  // its inputs, written before
  if (ncclResult_t r = check_args(comm, datatype, ncclSum); r != ncclSuccess) return r;
  const size_t bytes = sendcount * type_bytes(datatype);
  std::vector<char> all;
  if (!gather_all(comm, sendbuff, bytes, all))
    return fail(comm, ncclSystemError, "MPI_Allgather failed");
  ResultsInFlight results(recvbuff, all.size(), stream);
  if (!all.empty()) std::memcpy(results.data(), all.data(), all.size());
  results.complete();
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  tessera::kernels::cuda::emulator::land_pending(stream);  // its inputs, written before
  if (ncclResult_t r = check_args(comm, datatype, ncclSum); r != ncclSuccess) return r;
  if (root < 0 || root >= comm->size) return fail(comm, ncclInvalidArgument, "invalid root");
  const size_t bytes = count * type_bytes(datatype);
  ResultsInFlight results(recvbuff, bytes, stream);
  if (comm->rank == root && bytes) std::memcpy(results.data(), sendbuff, bytes);
  if (!mpi_ok(MPI_Bcast(results.data(), (int)bytes, MPI_BYTE, root, comm->comm)))
    return fail(comm, ncclSystemError, "MPI_Bcast failed");
  results.complete();
  return ncclSuccess;
}

namespace {
ncclResult_t post_p2p(bool send, void* buf, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  if (ncclResult_t r = check_args(comm, datatype, ncclSum); r != ncclSuccess) return r;
  if (peer < 0 || peer >= comm->size) return fail(comm, ncclInvalidArgument, "invalid peer");
  group_p2p.push_back({send, buf, count * type_bytes(datatype), peer, comm, stream});
  return ncclSuccess;
}

// A send or receive outside ncclGroupStart/End is a group of one.
ncclResult_t p2p(bool send, void* buf, size_t count, ncclDataType_t datatype, int peer,
                 ncclComm_t comm, cudaStream_t stream) {
  ncclGroupStart();
  const ncclResult_t posted = post_p2p(send, buf, count, datatype, peer, comm, stream);
  const ncclResult_t ended = ncclGroupEnd();
  return posted != ncclSuccess ? posted : ended;
}
}  // namespace

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return p2p(true, const_cast<void*>(sendbuff), count, datatype, peer, comm, stream);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return p2p(false, recvbuff, count, datatype, peer, comm, stream);
}

ncclResult_t ncclGroupStart() {
  group_depth++;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (group_depth <= 0) return ncclInvalidUsage;
  if (--group_depth > 0) return ncclSuccess;
  std::vector<PendingP2p> ops;
  ops.swap(group_p2p);
  std::vector<MPI_Request> requests(ops.size());
  std::vector<ResultsInFlight> received;
  received.reserve(ops.size());
  // NCCL matches the sends and receives between a pair in order; so do MPI's (one tag).
  for (size_t i = 0; i < ops.size(); i++) {
    const PendingP2p& op = ops[i];
    tessera::kernels::cuda::emulator::land_pending(op.stream);  // what was queued before
    if (!op.send) received.emplace_back(op.buf, op.bytes, op.stream);
    const int err = op.send ? MPI_Issend(op.buf, (int)op.bytes, MPI_BYTE, op.peer, 0,
                                        op.comm->comm, &requests[i])
                            : MPI_Irecv(received.back().data(), (int)op.bytes, MPI_BYTE,
                                        op.peer, 0, op.comm->comm, &requests[i]);
    if (!mpi_ok(err)) return fail(op.comm, ncclSystemError, "MPI_Issend/MPI_Irecv failed");
  }
  if (!requests.empty() &&
      !mpi_ok(MPI_Waitall((int)requests.size(), requests.data(), MPI_STATUSES_IGNORE)))
    return fail(ops[0].comm, ncclSystemError, "MPI_Waitall failed");
  for (ResultsInFlight& r : received) r.complete();
  return ncclSuccess;
}
