// The world of the NCCL communicator's tests (nccl_communicator_cases.cpp): all processes
// of the test, as a Communicator that each main provides (MPI under mpirun, or an NCCL
// communicator bootstrapped through a file where there is no MPI).
#pragma once
#include "parallel/communicator.h"

namespace tessera {
Communicator& test_world();
}
