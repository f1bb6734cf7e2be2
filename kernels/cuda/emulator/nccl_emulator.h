// The NCCL emulator: the part of NCCL's API that parallel/nccl_communicator.cpp calls,
// over MPI, on the CUDA emulator's "device" memory (host memory).
//
// It exists so that the NCCL communicator, and training on the emulated GPU with several
// ranks, run in CI under mpirun on machines without a GPU: the unique id handed from
// rank to rank, communicators made from it, every collective with real
// arithmetic on every NCCL type we use, grouped send/receive, and a communicator that
// fails. It is a test tool, not a transport: every call communicates at once, over MPI,
// but leaves its results in flight on its stream (cuda_emulator.h, land_later): they reach
// the output buffer only once the program is ordered after the operation (waits for its
// event, synchronizes its stream), so a program that reads a result without waiting reads
// the old contents and fails its test, as it could on a GPU. Every reduction gathers all
// ranks' buffers and combines them in rank order, so its results are deterministic but
// not NCCL's bits (NCCL's ring and tree orders differ; bf16 partial sums are rounded to
// bf16 after every addition, as in NCCL's bf16 kernels).
//
// How ranks find each other: ncclGetUniqueId writes the caller's MPI_COMM_WORLD rank and a
// per-process counter into the id. ncclCommInitRank sends each member's world rank to the
// id's creator (which must be a member, as in Tessera's use: rank 0 creates the id),
// which answers with the member table; the members then build an MPI communicator of
// their own (MPI_Comm_create_group, collective over the members only, as NCCL's init is).
// MPI must be initialised; messages use MPI_COMM_WORLD with tags above 20000.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/emulator/cuda_emulator.h"

#define NCCL_UNIQUE_ID_BYTES 128

typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
} ncclResult_t;

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;

typedef enum {
  ncclInt8 = 0,
  ncclUint8 = 1,
  ncclInt32 = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6,
  ncclFloat32 = 7,
  ncclFloat64 = 8,
  ncclBfloat16 = 9,
} ncclDataType_t;

typedef struct ncclComm* ncclComm_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
// Of NCCL's configuration only `blocking`; the emulator's calls all block, so any other
// value is refused (ncclInvalidArgument).
#define NCCL_CONFIG_UNDEF_INT (-2147483647 - 1)
typedef struct {
  int blocking;
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {NCCL_CONFIG_UNDEF_INT}
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error);
const char* ncclGetErrorString(ncclResult_t result);
const char* ncclGetLastError(ncclComm_t comm);

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream);
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream);
// Sends and receives between Start and End are posted together at End (so a pair of
// ranks that each send and receive in one group cannot deadlock); collectives inside a
// group run at once, in issue order. A send completes only once its receive is posted
// (synchronous mode): NCCL's worst case, so that an order of sends and receives that
// could deadlock on a GPU deadlocks here too, in CI.
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();
