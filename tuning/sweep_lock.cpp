// The sweeper's lock file (tuning/sweep_lock.h).
#include "tuning/sweep_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"

namespace tessera::tuning {
namespace {

std::string this_host() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

struct Owner {
  std::string host;
  long pid = 0;
  std::string start;
};

Owner read_owner(const std::string& path) {
  std::ifstream in(path);
  Owner o;
  in >> o.host >> o.pid >> o.start;
  return o;
}

bool stale(const Owner& o) {
  if (o.host != this_host()) return false;  // cannot tell: assume it lives
  if (o.pid <= 0) return true;
  if (::kill((pid_t)o.pid, 0) != 0 && errno == ESRCH) return true;
  return process_start_time(o.pid) != o.start;
}

}  // namespace

std::string process_start_time(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return "";
  // The command name (field 2) is in parentheses and may hold spaces: count after it.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; i++) {
  }
  return field;
}

SweepLock::SweepLock(const std::string& dir) : path_(dir + "/sweeper.lock") {
  for (int attempt = 0; attempt < 2; attempt++) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const long pid = (long)getpid();
      const std::string line = this_host() + " " + std::to_string(pid) + " " + process_start_time(pid) + "\n";
      const bool ok = ::write(fd, line.data(), line.size()) == (ssize_t)line.size() && ::fsync(fd) == 0;
      ::close(fd);
      if (!ok) {
        ::unlink(path_.c_str());
        throw Error(path_ + ": cannot write the sweeper lock: " + std::strerror(errno));
      }
      return;
    }
    if (errno != EEXIST) throw Error(path_ + ": cannot create the sweeper lock: " + std::strerror(errno));
    const Owner owner = read_owner(path_);
    if (!stale(owner)) {
      throw Error(dir + ": another sweeper is running this sweep (pid " + std::to_string(owner.pid) +
                  " on " + owner.host + "); wait for it or stop it (tessera sweep cancel stops the "
                  "trials too). If that process is really gone, remove " + path_);
    }
    ::unlink(path_.c_str());  // stale: its owner was killed; take it over
  }
  throw Error(path_ + ": could not take the sweeper lock (another sweeper raced for it)");
}

SweepLock::~SweepLock() { ::unlink(path_.c_str()); }

bool sweeper_running(const std::string& dir) {
  const std::string path = dir + "/sweeper.lock";
  if (::access(path.c_str(), F_OK) != 0) return false;
  return !stale(read_owner(path));
}

}  // namespace tessera::tuning
