// The main() of the MPI gtest programs (tests/CMakeLists.txt, tessera_mpi_gtest): MPI
// initialised at the requested thread level, results printed by rank 0 only, and the
// worst rank's result returned by every rank (so mpirun reports a failure anywhere).
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

inline int run_mpi_gtests(int argc, char** argv, int thread_level) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, thread_level, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
