// gpu_nccl_tests' main, for a machine with a GPU and NCCL but no MPI: processes that find
// each other through a file (tests/nccl/file_bootstrap.h), whose world is an NCCL
// communicator of all of them. Exit 77 (ctest's "skipped") where there is no GPU, saying
// why; otherwise the worst result of all processes, printed by rank 0.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "kernels/cuda/runtime.h"
#include "tests/nccl/file_bootstrap.h"
#include "tests/nccl/test_world.h"

namespace tessera {
namespace {
std::unique_ptr<Communicator> world;
}
Communicator& test_world() { return *world; }
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  ::testing::InitGoogleTest(&argc, argv);
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("gpu_nccl_tests: skipped: no GPU (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "the CUDA runtime found no device");
    return 77;
  }
  ProcessGroup processes;
  try {
    processes = start_processes(&argc, &argv);
    world = nccl_world(processes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_nccl_tests rank %d: %s\n", processes.rank, e.what());
    return 2;
  }
  if (processes.rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int32_t rc = RUN_ALL_TESTS();
  world->all_reduce(&rc, 1, ScalarType::i32, ReduceOp::max);
  world.reset();
  finish_processes();
  return rc;
}
