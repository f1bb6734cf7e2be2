// MPI's error codes as exceptions: mpi_check(rc, "Who", "MPI_Call") throws
// CommError("communication failed in Who: MPI_Call (<MPI's error string>)") unless rc is
// MPI_SUCCESS. MPI reports errors this way, instead of aborting with its own message,
// once MPI_COMM_WORLD's error handler is MPI_ERRORS_RETURN (set by the command line after
// MPI_Init; communicators made from it inherit the handler).
#pragma once

#include <mpi.h>

#include <string>

#include "parallel/communicator.h"

namespace tessera {

inline void mpi_check(int rc, const char* who, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw CommError(std::string("communication failed in ") + who + ": " + what + " (" +
                  std::string(msg, static_cast<size_t>(len)) + ")");
}

}  // namespace tessera
