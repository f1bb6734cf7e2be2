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

// Throws tessera::Error(message) unless cond holds.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace tessera
