// Small RAII and helper layer over the HDF5 C API, private to checkpoint/.
//
// HDF5 reports failures by printing an error stack to stderr and returning a negative
// value. Here a Quiet guard switches the printing off while checkpoint code runs, and
// every failing call throws tessera::Error with our context plus the innermost HDF5
// message (e.g. "truncated file: eof = 4096, stored_eof = 8192"), so the user gets one line.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::h5 {

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  // Closes now and reports whether closing worked (a file's final flush happens here).
  bool close() {
    const bool ok = id_ < 0 || closer_(id_) >= 0;
    id_ = -1;
    return ok;
  }

 private:
  void reset() {
    if (id_ >= 0) closer_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// Turns off HDF5's automatic error printing for its lifetime, restoring what was there.
class Quiet {
 public:
  Quiet();
  ~Quiet();
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost message on HDF5's current error stack ("" if none).
std::string last_error();

// Throws tessera::Error("<context>: <innermost HDF5 message>").
[[noreturn]] void fail(const std::string& context);

// Returns id, or throws via fail(context) when it is negative.
hid_t checked(hid_t id, const std::string& context);
void checked_status(herr_t status, const std::string& context);

Handle file_create(const std::string& path);   // truncates; closes all objects on close
Handle file_open_read(const std::string& path);
Handle group_create(hid_t loc, const std::string& name);
Handle group_open(hid_t loc, const std::string& name);
Handle dataset_open(hid_t loc, const std::string& name, const std::string& context);
Handle simple_space(const std::vector<int64_t>& shape);

// Scalar attributes on an object. Strings are fixed-length UTF-8 (h5py: numpy bytes).
void write_attr(hid_t obj, const std::string& name, const std::string& value);
void write_attr(hid_t obj, const std::string& name, int64_t value);
bool has_attr(hid_t obj, const std::string& name);
std::string read_string_attr(hid_t obj, const std::string& name, const std::string& context);
int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& context);

// A scalar fixed-length string dataset, for text that may exceed the 64 KiB attribute limit.
void write_string_dataset(hid_t loc, const std::string& name, const std::string& value);
std::string read_string_dataset(hid_t loc, const std::string& name, const std::string& context);

// Shape of a dataset.
std::vector<int64_t> dataset_shape(hid_t dset);

// Names of the links in a group, in name order.
std::vector<std::string> group_members(hid_t group);

}  // namespace tessera::h5
