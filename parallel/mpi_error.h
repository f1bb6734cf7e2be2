// MPI's error codes as exceptions: mpi_check(rc, "Who", "MPI_Call") throws
// std::runtime_error("Who: MPI_Call failed: <MPI's error string>") unless rc is MPI_SUCCESS.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace tessera {

inline void mpi_check(int rc, const char* who, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(who) + ": " + what + " failed: " +
                           std::string(msg, static_cast<size_t>(len)));
}

}  // namespace tessera
