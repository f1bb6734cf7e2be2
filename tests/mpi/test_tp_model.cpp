// Tensor-parallel GPT-2 under mpirun (tp = world size, 2 or 4): the checks of
// tests/unit/tp_model_check.h over MPI.
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/mpi_communicator.h"
#include "tests/mpi/mpi_gtest_main.h"
#include "tests/unit/tp_model_check.h"

namespace tessera {
namespace {

void check_layout(int vocab, int vocab_padded) {
  MpiCommunicator tp(MPI_COMM_WORLD);
  check_tp_model(tp, vocab, vocab_padded, 1e-6);
}

TEST(TensorParallelModel, MatchesSingleProcess) { check_layout(256, 256); }
TEST(TensorParallelModel, VocabularyNotDivisibleByTp) { check_layout(255, 255); }
TEST(TensorParallelModel, PaddedVocabulary) { check_layout(250, 253); }

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return run_mpi_gtests(argc, argv, MPI_THREAD_SINGLE); }
