// Reading checkpoints. The reader trusts nothing it has not checked: HDF5 reads a missing
// virtual-dataset source silently as the fill value, so every shard file the index maps
// onto is opened first, and every tensor's bytes are hashed against the index's checksum.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>

#include "checkpoint/checkpoint.h"
#include "checkpoint/format.h"
#include "checkpoint/h5.h"
// See h5.cpp: tessera::Error is the one framework/ type checkpoint/ uses (header-only).
#include "framework/util/error.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// One mapping of a virtual dataset: the shard file (as written in the index) and the
// dataset inside it.
struct Source {
  std::string file, dataset;
};

// The sources of a dataset in the index; empty when it is an ordinary (non-virtual) one.
std::vector<Source> virtual_sources(hid_t dset, const std::string& context) {
  h5::Handle dcpl(h5::checked(H5Dget_create_plist(dset), context), H5Pclose);
  if (H5Pget_layout(dcpl) != H5D_VIRTUAL) return {};
  size_t count = 0;
  h5::checked_status(H5Pget_virtual_count(dcpl, &count), context);
  std::vector<Source> out(count);
  for (size_t i = 0; i < count; i++) {
    const ssize_t nf = H5Pget_virtual_filename(dcpl, i, nullptr, 0);
    const ssize_t nd = H5Pget_virtual_dsetname(dcpl, i, nullptr, 0);
    if (nf < 0 || nd < 0) h5::fail(context);
    std::string f(nf + 1, '\0'), d(nd + 1, '\0');
    H5Pget_virtual_filename(dcpl, i, f.data(), f.size());
    H5Pget_virtual_dsetname(dcpl, i, d.data(), d.size());
    f.resize(nf);
    d.resize(nd);
    out[i] = {f, d};
  }
  return out;
}

}  // namespace

std::string resolve_checkpoint_dir(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "ckpt/" -> "ckpt"
  const std::string leaf = p.filename().string();
  if (leaf.find(ckpt::kTmpMarker) != std::string::npos)
    throw Error("checkpoint " + p.string() +
                " is unfinished: a .tmp directory left by an interrupted or failed write");
  std::error_code ec;
  if (!fs::exists(p, ec)) throw Error("checkpoint " + p.string() + " does not exist");
  if (fs::is_regular_file(p / ckpt::kIndexFile, ec)) return p.string();

  const fs::path latest = p / ckpt::kLatestFile;
  if (fs::is_regular_file(latest, ec)) {
    std::ifstream in(latest);
    std::string name;
    in >> name;  // one token: the directory name, whitespace around it ignored
    int64_t step = 0;
    if (!ckpt::parse_step_dir_name(name, &step))
      throw Error(latest.string() + " does not name a checkpoint directory (it holds '" + name + "')");
    const fs::path d = p / name;
    if (!fs::is_directory(d, ec))
      throw Error(latest.string() + " names " + name + ", which does not exist");
    if (!fs::is_regular_file(d / ckpt::kIndexFile, ec))
      throw Error("checkpoint " + d.string() + " has no " + ckpt::kIndexFile);
    return d.string();
  }
  int64_t step = 0;
  if (ckpt::parse_step_dir_name(leaf, &step))
    throw Error("checkpoint " + p.string() + " has no " + ckpt::kIndexFile);
  throw Error(p.string() + " is not a checkpoint: it holds neither " + ckpt::kIndexFile +
              " nor a `latest` file");
}

LoadedCheckpoint load_checkpoint(const std::string& path, const std::vector<TensorDest>& outputs) {
  LoadedCheckpoint out;
  out.path = resolve_checkpoint_dir(path);
  const fs::path dir(out.path);
  const std::string index_path = (dir / ckpt::kIndexFile).string();
  h5::Quiet quiet;

  h5::Handle f = h5::file_open_read(index_path);
  const std::string format = h5::read_string_attr(f, "format", index_path);
  if (format != ckpt::kIndexFormat)
    throw Error(index_path + " is not a Tessera checkpoint index (format '" + format + "')");
  const int64_t version = h5::read_int_attr(f, "format_version", index_path);
  if (version > ckpt::kFormatVersion)
    throw Error(index_path + " has format version " + std::to_string(version) +
                ", newer than this build reads (" + std::to_string(ckpt::kFormatVersion) + ")");
  CheckpointMeta& meta = out.meta;
  meta.step = h5::read_int_attr(f, "step", index_path);
  meta.tokens_seen = h5::read_int_attr(f, "tokens_seen", index_path);
  meta.data_position = h5::read_int_attr(f, "data_position", index_path);
  meta.run_id = h5::read_string_attr(f, "run_id", index_path);
  {
    h5::Handle m = h5::group_open(f, ckpt::kMetaGroup);
    meta.recipe_yaml = h5::read_string_dataset(m, "recipe_yaml", index_path);
    const std::string layout = h5::read_string_dataset(m, "layout_json", index_path);
    meta.layout = nlohmann::json::parse(layout, nullptr, /*allow_exceptions=*/false);
    if (meta.layout.is_discarded()) throw Error(index_path + ": /meta/layout_json is not valid JSON");
  }

  if (H5Lexists(f, ckpt::kTensorGroup, H5P_DEFAULT) <= 0)
    throw Error(index_path + " has no /" + std::string(ckpt::kTensorGroup) + " group");
  h5::Handle g = h5::group_open(f, ckpt::kTensorGroup);
  const std::vector<std::string> names = h5::group_members(g);

  std::unordered_map<std::string, const TensorDest*> wanted;
  for (const TensorDest& t : outputs) wanted[t.name] = &t;
  for (const TensorDest& t : outputs)
    if (!std::binary_search(names.begin(), names.end(), t.name))
      throw Error(index_path + " has no tensor '" + t.name + "'");

  // First every shard file: it must exist, open as HDF5 (a truncated file fails here) and
  // hold the mapped dataset. Only then read through the index.
  std::map<std::string, std::vector<Source>> sources;  // tensor -> its sources
  {
    std::map<std::string, h5::Handle> shard_files;      // opened once each
    for (const std::string& name : names) {
      const std::string context = index_path + ": tensor " + name;
      h5::Handle d = h5::dataset_open(g, name, context);
      sources[name] = virtual_sources(d, context);
      for (const Source& s : sources[name]) {
        if (s.file == ".") continue;  // HDF5's name for "this same file"
        const std::string shard =
            (fs::path(s.file).is_absolute() ? fs::path(s.file) : dir / s.file).string();
        auto it = shard_files.find(shard);
        if (it == shard_files.end()) {
          std::error_code ec;
          if (!fs::exists(shard, ec))
            throw Error("checkpoint " + out.path + " is missing " + s.file +
                        " (the index maps tensor '" + name + "' onto it)");
          it = shard_files.emplace(shard, h5::file_open_read(shard)).first;
        }
        if (H5Lexists(it->second, s.dataset.c_str(), H5P_DEFAULT) <= 0)
          throw Error(shard + " has no dataset " + s.dataset + " (tensor '" + name + "')");
      }
    }
  }

  std::vector<float> scratch;
  for (const std::string& name : names) {
    const std::string context = index_path + ": tensor " + name;
    h5::Handle d = h5::dataset_open(g, name, context);
    const std::vector<int64_t> shape = h5::dataset_shape(d);
    const std::string expected = h5::read_string_attr(d, ckpt::kChecksumAttr, context);
    h5::Handle type(h5::checked(H5Dget_type(d), context), H5Tclose);
    if (H5Tget_class(type) != H5T_FLOAT) throw Error(context + " is not a floating-point tensor");

    float* dst = nullptr;
    if (auto it = wanted.find(name); it != wanted.end()) {
      if (it->second->shape != shape)
        throw Error("tensor '" + name + "' in " + index_path + " has shape " + shape_string(shape) +
                    ", expected " + shape_string(it->second->shape));
      dst = it->second->data;
    } else {
      scratch.resize((size_t)numel(shape));
      dst = scratch.data();
    }
    // Where the bytes live, for messages: the shard file of a virtual dataset.
    const std::vector<Source>& src = sources[name];
    const std::string holder =
        src.empty() || src[0].file == "." ? index_path : (dir / src[0].file).string();
    h5::checked_status(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst),
                       "cannot read tensor '" + name + "' from " + holder);
    const std::string actual = checksum_string(dst, (size_t)numel(shape));
    if (actual != expected)
      throw Error("checksum mismatch for tensor '" + name + "' in " + holder + ": index says " +
                  expected + ", data hashes to " + actual);
    out.tensors.push_back({name, shape, expected});
  }
  return out;
}

}  // namespace tessera
