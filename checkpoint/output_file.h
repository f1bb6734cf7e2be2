// A file written front to back for another tool (safetensors, GGUF): every failed write
// throws tessera::Error naming the file, and close() makes the bytes durable (fflush +
// fsync) before the caller renames the file into place.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

namespace tessera {

class OutputFile {
 public:
  OutputFile() = default;
  ~OutputFile();  // closes a file that was not close()d (the caller removes it)
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void create(const std::string& path);  // truncates an existing file
  void write(const void* data, size_t bytes);
  void close();  // flush, fsync, fclose; throws if any of them fails
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace tessera
