#include "checkpoint/output_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace tessera {

OutputFile::~OutputFile() {
  if (file_) std::fclose(file_);
}

void OutputFile::create(const std::string& path) {
  check(file_ == nullptr, "OutputFile::create: " + path_ + " is still open");
  path_ = path;
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw Error("cannot create " + path_ + ": " + std::strerror(errno));
}

void OutputFile::write(const void* data, size_t bytes) {
  check(file_ != nullptr, "OutputFile::write: no file open");
  if (std::fwrite(data, 1, bytes, file_) != bytes)
    throw Error("cannot write " + path_ + ": " + std::strerror(errno));
}

void OutputFile::close() {
  check(file_ != nullptr, "OutputFile::close: no file open");
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    throw Error("cannot write " + path_ + ": " + std::strerror(errno));
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) throw Error("cannot write " + path_ + ": " + std::strerror(errno));
}

}  // namespace tessera
