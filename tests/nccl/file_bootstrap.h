// Processes that find each other without MPI, for the checks that run on a GPU machine
// with NCCL but no MPI (gpu_nccl_tests, gpu_layout_check; scripts/gpu-check.sh).
//
// Process `rank` of `size` (TESSERA_NCCL_RANK / TESSERA_NCCL_RANKS, or Open MPI's
// OMPI_COMM_WORLD_RANK / _SIZE when started by mpirun, as the emulated builds are in CI).
// Rank 0 makes an NCCL unique id and writes it to TESSERA_NCCL_ID_FILE (under another name
// first, then renamed, so that no process reads half of it); the others wait for the file,
// which must not exist before the processes start (a stale id would be read).
// Several processes may share one GPU as separate NCCL "hosts": each needs its own
// NCCL_HOSTID, and NCCL_SHM_DISABLE=1 NCCL_P2P_DISABLE=1 NCCL_IB_DISABLE=1 NCCL_NET=Socket
// NCCL_SOCKET_IFNAME=lo, on a GPU in the Default compute mode.
//
// On the NCCL emulator (TESSERA_CUDA_EMULATOR) the processes are mpirun's and
// start_processes() initialises MPI, which the emulator runs on.
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace tessera {

struct ProcessGroup {
  int rank = 0, size = 1;
  std::string id_file;  // may be empty when size is 1
};

// Reads the environment (and, on the emulator, initialises MPI). Throws tessera::Error
// naming the variable that is missing or wrong.
ProcessGroup start_processes(int* argc, char*** argv);
// On the emulator, finalises MPI; else nothing.
void finish_processes();

// The NCCL communicator of all processes (collective over them).
std::unique_ptr<Communicator> nccl_world(const ProcessGroup& processes);

// The NCCL communicator of the processes of `world` that pass the same `color`, in world
// rank order: its first member makes the id, which goes to every process over `world`.
// Collective over world: every process calls it, in the same order.
std::unique_ptr<Communicator> nccl_group(Communicator& world, int color);

}  // namespace tessera
