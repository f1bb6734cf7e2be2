#include "checkpoint/h5.h"

#include <algorithm>

// tessera::Error (base/) is the type every layer throws; a second error type for
// checkpoints would only make callers catch two things.
#include "base/error.h"

namespace tessera::h5 {

Quiet::Quiet() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Quiet::~Quiet() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

namespace {

herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  // H5E_WALK_UPWARD starts at the function that detected the fault: the most specific.
  if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

Handle string_type(size_t size) {
  Handle t(checked(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  checked_status(H5Tset_size(t, std::max<size_t>(size, 1)), "H5Tset_size");
  checked_status(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad");
  checked_status(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset");
  return t;
}

// Reads a fixed-length string from an attribute or dataset whose type is `type`.
std::string read_fixed_string(hid_t type, const std::string& context,
                              herr_t (*read)(hid_t, hid_t, void*), hid_t obj) {
  if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0)
    throw Error(context + ": not a fixed-length string");
  std::string s(H5Tget_size(type), '\0');
  checked_status(read(obj, type, s.data()), context);
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  return s;
}

herr_t attr_read(hid_t a, hid_t t, void* buf) { return H5Aread(a, t, buf); }
herr_t dset_read(hid_t d, hid_t t, void* buf) {
  return H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

}  // namespace

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &msg);
  // I/O failures read "file write failed: time = <ctime with a newline>, filename = ...,
  // errno = 28, error message = 'No space left on device', buf = ...": keep the first
  // clause and the system's message.
  const std::string key = "error message = '";
  if (const size_t at = msg.find(key); at != std::string::npos) {
    const size_t end = msg.find('\'', at + key.size());
    msg = msg.substr(0, msg.find(':')) + ": " + msg.substr(at + key.size(), end - at - key.size());
  }
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  return msg;
}

void fail(const std::string& context) {
  const std::string detail = last_error();
  H5Eclear2(H5E_DEFAULT);
  throw Error(detail.empty() ? context : context + ": " + detail);
}

hid_t checked(hid_t id, const std::string& context) {
  if (id < 0) fail(context);
  return id;
}

void checked_status(herr_t status, const std::string& context) {
  if (status < 0) fail(context);
}

Handle file_create(const std::string& path) {
  Handle fapl(checked(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  // Closing the file then closes every object still open in it, so the flush (and any
  // write error it reports) happens at our H5Fclose, before the fsync.
  checked_status(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), "H5Pset_fclose_degree");
  return Handle(checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl),
                        "cannot create " + path),
                H5Fclose);
}

Handle file_open_read(const std::string& path) {
  return Handle(checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "cannot open " + path),
                H5Fclose);
}

Handle group_create(hid_t loc, const std::string& name) {
  return Handle(checked(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        "cannot create group " + name),
                H5Gclose);
}

Handle group_open(hid_t loc, const std::string& name) {
  return Handle(checked(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), "cannot open group " + name),
                H5Gclose);
}

Handle dataset_open(hid_t loc, const std::string& name, const std::string& context) {
  return Handle(checked(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), context), H5Dclose);
}

Handle simple_space(const std::vector<int64_t>& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return Handle(checked(H5Screate_simple((int)dims.size(), dims.data(), nullptr), "H5Screate_simple"),
                H5Sclose);
}

void write_attr(hid_t obj, const std::string& name, const std::string& value) {
  Handle type = string_type(value.size());
  Handle space(checked(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle attr(checked(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                      "cannot create attribute " + name),
              H5Aclose);
  std::string buf = value;
  buf.resize(std::max<size_t>(value.size(), 1), '\0');
  checked_status(H5Awrite(attr, type, buf.data()), "cannot write attribute " + name);
}

void write_attr(hid_t obj, const std::string& name, int64_t value) {
  Handle space(checked(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle attr(checked(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                      "cannot create attribute " + name),
              H5Aclose);
  checked_status(H5Awrite(attr, H5T_NATIVE_INT64, &value), "cannot write attribute " + name);
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

std::string read_string_attr(hid_t obj, const std::string& name, const std::string& context) {
  if (!has_attr(obj, name)) throw Error(context + ": attribute '" + name + "' is missing");
  Handle attr(checked(H5Aopen(obj, name.c_str(), H5P_DEFAULT), context + ": attribute " + name),
              H5Aclose);
  Handle type(checked(H5Aget_type(attr), context), H5Tclose);
  return read_fixed_string(type, context + ": attribute '" + name + "'", attr_read, attr);
}

int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& context) {
  if (!has_attr(obj, name)) throw Error(context + ": attribute '" + name + "' is missing");
  Handle attr(checked(H5Aopen(obj, name.c_str(), H5P_DEFAULT), context + ": attribute " + name),
              H5Aclose);
  Handle type(checked(H5Aget_type(attr), context), H5Tclose);
  if (H5Tget_class(type) != H5T_INTEGER)
    throw Error(context + ": attribute '" + name + "' is not an integer");
  int64_t v = 0;
  checked_status(H5Aread(attr, H5T_NATIVE_INT64, &v), context + ": attribute " + name);
  return v;
}

void write_string_dataset(hid_t loc, const std::string& name, const std::string& value) {
  Handle type = string_type(value.size());
  Handle space(checked(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle dset(checked(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                      "cannot create dataset " + name),
              H5Dclose);
  std::string buf = value;
  buf.resize(std::max<size_t>(value.size(), 1), '\0');
  checked_status(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()),
                 "cannot write dataset " + name);
}

std::string read_string_dataset(hid_t loc, const std::string& name, const std::string& context) {
  if (H5Lexists(loc, name.c_str(), H5P_DEFAULT) <= 0)
    throw Error(context + ": dataset '" + name + "' is missing");
  Handle dset = dataset_open(loc, name, context + ": dataset " + name);
  Handle type(checked(H5Dget_type(dset), context), H5Tclose);
  return read_fixed_string(type, context + ": dataset '" + name + "'", dset_read, dset);
}

std::vector<int64_t> dataset_shape(hid_t dset) {
  Handle space(checked(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) fail("H5Sget_simple_extent_ndims");
  std::vector<hsize_t> dims(rank);
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<std::string> group_members(hid_t group) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  checked_status(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &names),
                 "cannot list group");
  return names;
}

}  // namespace tessera::h5
