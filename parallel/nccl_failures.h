// What an NcclCommunicator (parallel/nccl_communicator.cpp) knows about its failures: the
// first one, whether the host has noticed it, and when its watchdog should take the host
// for stuck (NcclOptions::on_stuck). Not thread-safe: the communicator keeps it under its
// state mutex, shared by the host's calls and the watchdog.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "parallel/communicator.h"

namespace tessera {

// "communication failed in NcclCommunicator: <what> (<reason>)", every NCCL error's form.
inline std::string nccl_failure(const std::string& what, const std::string& reason) {
  return "communication failed in NcclCommunicator: " + what + " (" + reason + ")";
}

class NcclFailures {
 public:
  using Clock = std::chrono::steady_clock;

  bool any() const { return !first_.empty(); }

  // Remembers the first failure: the operation `what`, and why.
  void record(const std::string& what, const std::string& reason) {
    if (any()) return;
    first_ = what + " (" + reason + ")";
    found_at_ = Clock::now();
  }
  // After a failure, every call throws, naming its own operation and the first failure;
  // the host has then noticed it.
  void throw_if_any(const std::string& what) {
    if (!any()) return;
    noticed_ = true;
    throw CommError(nccl_failure(
        what, "the communicator was aborted after an earlier failure: " + first_));
  }
  void noticed() { noticed_ = true; }

  // NCCL's asynchronous error found while nothing was in flight (a peer that closed its
  // connections at its end of the run, or died between steps) fails the next operation,
  // `what`, rather than the idle host.
  void found_while_idle(const std::string& reason) { idle_ = reason; }
  void fail_if_found_while_idle(const std::string& what) {
    if (!idle_.empty()) record(what, idle_);
  }

  // The host is inside the NCCL call `what` (entering) or out of it (left). A call can wait
  // for the peers: the initialisation, and an operation whose connections NCCL sets up on
  // first use; a peer that never comes leaves the host there, where the watchdog sees it.
  void entering(const std::string& what) {
    inside_ = what;
    entered_at_ = Clock::now();
  }
  void left() { inside_.clear(); }
  // The call the host has been inside for more than `timeout` seconds (0: no limit), or "".
  std::string inside_longer_than(double timeout) const {
    if (inside_.empty() || timeout <= 0 || seconds_since(entered_at_) <= timeout) return "";
    return inside_;
  }

  // The communicator is being destroyed (or aborted at its end).
  void destroying() {
    destroying_ = true;
    destroying_since_ = Clock::now();
  }
  bool is_destroying() const { return destroying_; }

  // on_stuck's message, once, when it is due: a failure the host has not noticed, or a
  // destroy that has not returned, after `stuck_after` seconds; else "".
  std::string stuck_message(double stuck_after) {
    if (stuck_reported_) return "";
    std::string message;
    if (any() && !noticed_ && seconds_since(found_at_) > stuck_after)
      message = nccl_failure(first_, "the host did not come back to the communicator within " +
                                         seconds_text(stuck_after) +
                                         " s: stuck in NCCL or CUDA, or busy elsewhere; "
                                         "ended by the watchdog");
    else if (destroying_ && seconds_since(destroying_since_) > stuck_after)
      message = nccl_failure("ncclCommDestroy", "did not return within " +
                                                    seconds_text(stuck_after) +
                                                    " s; ended by the watchdog");
    stuck_reported_ = !message.empty();
    return message;
  }

  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }
  static std::string seconds_text(double s) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", s);
    return text;
  }

 private:
  std::string first_;  // "<what> (<reason>)"; "" while all is well
  Clock::time_point found_at_;
  bool noticed_ = false;         // the host has thrown it
  std::string idle_;             // found_while_idle's reason
  std::string inside_;            // the NCCL call the host is in; "" when out
  Clock::time_point entered_at_;
  bool destroying_ = false;
  Clock::time_point destroying_since_;
  bool stuck_reported_ = false;  // stuck_message has given its message
};

}  // namespace tessera
