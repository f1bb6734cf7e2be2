// mpi_nccl_tests' main: the processes of mpirun, whose world is MPI_COMM_WORLD.
#include <mpi.h>

#include "parallel/mpi_communicator.h"
#include "tests/mpi/mpi_gtest_main.h"
#include "tests/nccl/test_world.h"

namespace tessera {
// Kept until exit: an MpiCommunicator must not be destroyed after MPI_Finalize.
Communicator& test_world() {
  static MpiCommunicator* world = new MpiCommunicator(MPI_COMM_WORLD);
  return *world;
}
}  // namespace tessera

int main(int argc, char** argv) { return run_mpi_gtests(argc, argv, MPI_THREAD_FUNNELED); }
