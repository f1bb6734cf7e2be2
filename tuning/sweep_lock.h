// One sweeper per sweep directory. The lock is a file created with O_EXCL (atomic on
// local and NFS file systems alike) holding the owner's host, pid and process start time.
// A lock left by a sweeper that was killed is recognised as stale when its host is this
// host and that process is gone (or the pid now belongs to a younger process), and is
// taken over; a live owner, or one on another host, is refused with a message naming it.
#pragma once
#include <string>

namespace tessera::tuning {

class SweepLock {
 public:
  // Takes `<dir>/sweeper.lock` or throws tessera::Error naming the owner.
  explicit SweepLock(const std::string& dir);
  ~SweepLock();  // removes the lock file
  SweepLock(const SweepLock&) = delete;
  SweepLock& operator=(const SweepLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot), "" when
// it is gone: with the pid, it names a process even after the pid is reused.
std::string process_start_time(long pid);

// Whether the sweep in `dir` has a live sweeper (a lock that is not stale).
bool sweeper_running(const std::string& dir);

}  // namespace tessera::tuning
