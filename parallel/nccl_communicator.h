// NcclCommunicator: the Communicator of ranks that train on GPUs, one GPU per rank, over
// NCCL (parallel/nccl_communicator.cpp).
//
// Memory: the float operations (all_reduce, all_reduce_bf16, reduce_scatter, all_gather,
// broadcast, send/recv) take DEVICE pointers: the model's gradients, parameters and
// activations. The agreements (the typed all_reduce, broadcast_bytes, all_gather_bytes,
// barrier) take HOST memory, as everywhere else in the trainer: they are staged through a
// small device buffer, so a loss or a norm needs no code of its own on the GPU.
//
// Streams: NCCL runs on a communication stream of its own. Each operation first waits
// for the work already queued on the compute stream (the legacy default stream, where
// the CUDA backend runs every kernel: an event recorded there), so it reads finished
// buffers; it records a completion event on the communication stream. The host never
// waits for a float operation: the blocking forms and an async handle's wait() make the
// compute stream wait for that event (cudaStreamWaitEvent) and return, as PyTorch's and
// Megatron's collectives do, so the host keeps queueing kernels while NCCL runs. test()
// asks whether the event has happened; synchronize() and the agreements (whose results
// the host reads) wait for it on the host.
//
// Failures: a call NCCL refuses aborts the communicator and throws CommError at once.
// What the host cannot see because it does not wait (an asynchronous NCCL error: a peer
// that died, a network failure; or an operation still unfinished after
// NcclOptions::timeout_seconds: a peer missing or stuck) is found by a watchdog thread
// of the communicator, which looks every 50 ms. It aborts the communicator, which ends
// the operations NCCL still runs, so neither the GPU nor the host hangs; the next call
// on the communicator (or its synchronize()) throws CommError naming the first failure.
// A host stuck where it cannot notice (inside an NCCL call that waits for a peer that
// never comes: the initialisation, a connection's first use) is ended through
// NcclOptions::on_stuck.
//
// bf16 on the wire: the fp32 buffer is rounded to a bf16 device copy (nearest even), the
// bf16 copy is summed by ncclAllReduce(ncclBfloat16), and the sum is widened back.
// send/recv: NCCL ignores tags and matches in order between a pair of ranks.
//
// Creation is collective over the group: rank 0 makes the unique id (ncclGetUniqueId) and
// the others receive it through a bootstrap communicator (the group's MPI communicator in
// a training job) or any other way (a file: the GPU machine's tests run without MPI).
// Builds without NCCL have these functions too; they throw an Error that says so.
// In the emulated build (tessera_nccl_communicator_emulated) the same source runs over
// the NCCL emulator (kernels/cuda/emulator/nccl_emulator.h), on the CUDA emulator.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace tessera {

// The 128 bytes that name one NCCL communicator before it exists (ncclUniqueId).
struct NcclUniqueId {
  char bytes[128] = {};
};

struct NcclOptions {
  // Seconds an operation may stay unfinished before the watchdog aborts the communicator
  // (0 = no limit). The time counts from the call, so a peer busy for long elsewhere
  // (writing a checkpoint, evaluating) counts against it. The same limit holds for the host
  // inside one NCCL call (the initialisation, or an operation whose connections NCCL sets
  // up on first use, both of which wait for the peers): that is recorded as a failure, and
  // on_stuck follows, since no abort can happen under the host's call.
  double timeout_seconds = 600;
  // Test hooks for this rank's operation number N (0 = its first); -1 = never.
  // fail_at_operation: the call fails as an NCCL error would (aborted, CommError thrown).
  int64_t fail_at_operation = -1;
  // async_error_at_operation: the operation runs, and then NCCL is taken to report an
  // asynchronous error (as after a network failure), which only the watchdog finds.
  int64_t async_error_at_operation = -1;
  // Called by the watchdog, with the error message, when the host has not noticed a
  // failure `stuck_after_seconds` after it was found: it is stuck inside an NCCL call (so
  // the communicator cannot be aborted) or in a CUDA call behind a kernel that the abort
  // did not end. The trainer prints the message and ends the process; unset, nothing
  // happens.
  std::function<void(const std::string& message)> on_stuck;
  double stuck_after_seconds = 30;
};

// "" when this build can make NCCL communicators, else why not (no CUDA or no NCCL in
// the build). A machine without a GPU is found later, by the CUDA backend.
std::string nccl_unavailable_reason();

// ncclGetUniqueId.
NcclUniqueId nccl_unique_id();

// Rank `rank` of `nranks` joins the communicator named by `id`, on the current CUDA
// device (the CUDA backend has set it). Every rank of the group must call it.
std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId& id, int nranks,
                                                     int rank, const NcclOptions& options = {});

// The same group as `bootstrap` (same ranks, same order) on NCCL: bootstrap's rank 0
// makes the id and broadcasts it. Collective over bootstrap. If rank 0 cannot make an id,
// every rank throws the same error.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap,
                                                     const NcclOptions& options = {});

}  // namespace tessera
