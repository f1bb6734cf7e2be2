// Errors a user can act on. Every fault that bad input can cause is thrown as
// tessera::Error with one line naming the file, key or value and what was expected; the
// command line prints it and exits with code 2. Anything else escaping is a bug.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A configuration error that every rank of a job raises identically and before any
// communication: a pure function of what every rank shares (the recipe text, the command
// line, the world size), never of a file only some nodes see, a device or a rank. Under
// MPI the command line prints it once (rank 0) and every rank exits 2 after MPI_Finalize,
// without MPI_Abort; any other Error ends the whole job with MPI_Abort, since the other
// ranks may be waiting for the one that failed.
struct ConfigError : Error {
  using Error::Error;
};

// Throws tessera::Error(message) unless cond holds.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace tessera
