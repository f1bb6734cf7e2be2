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
// See h5.cpp: checkpoints throw tessera::Error, as every layer does.
#include "base/error.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

using ckpt::numel;
using ckpt::shape_string;

// The index of a checkpoint, opened and checked: format, version, metadata, shards.
struct Index {
  std::string dir, path;  // the step directory and its index.h5
  h5::Handle file;
  LoadedCheckpoint info;
  nlohmann::json shards;  // as written: [{file, rank, bytes, checksum, pieces: [...]}]
};

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(what + " is not valid JSON");
  return j;
}

Index open_index(const std::string& path) {
  Index x;
  x.dir = resolve_checkpoint_dir(path);
  x.path = (fs::path(x.dir) / ckpt::kIndexFile).string();
  x.info.path = x.dir;
  x.file = h5::file_open_read(x.path);
  const std::string format = h5::read_string_attr(x.file, "format", x.path);
  if (format != ckpt::kIndexFormat)
    throw Error(x.path + " is not a Tessera checkpoint index (format '" + format + "')");
  const int64_t version = h5::read_int_attr(x.file, "format_version", x.path);
  if (version != ckpt::kFormatVersion)
    throw Error(x.path + " has format version " + std::to_string(version) + "; this build reads " +
                std::to_string(ckpt::kFormatVersion) +
                (version < ckpt::kFormatVersion ? " (written by an older Tessera)" : ""));
  CheckpointMeta& meta = x.info.meta;
  meta.step = h5::read_int_attr(x.file, "step", x.path);
  meta.tokens_seen = h5::read_int_attr(x.file, "tokens_seen", x.path);
  meta.data_position = h5::read_int_attr(x.file, "data_position", x.path);
  meta.run_id = h5::read_string_attr(x.file, "run_id", x.path);
  meta.library_version = h5::read_string_attr(x.file, "library_version", x.path);
  h5::Handle m = h5::group_open(x.file, ckpt::kMetaGroup);
  meta.recipe_yaml = h5::read_string_dataset(m, "recipe_yaml", x.path);
  meta.layout = parse_json(h5::read_string_dataset(m, "layout_json", x.path), x.path + ": /meta/layout_json");
  meta.rng = parse_json(h5::read_string_dataset(m, "rng_json", x.path), x.path + ": /meta/rng_json");
  meta.extra = parse_json(h5::read_string_dataset(m, "extra_json", x.path), x.path + ": /meta/extra_json");
  x.shards = parse_json(h5::read_string_dataset(m, "shards_json", x.path), x.path + ": /meta/shards_json");
  try {
    std::map<std::string, CheckpointTensorInfo> tensors;
    for (const auto& shard : x.shards) {
      CheckpointShardInfo s;
      s.file = shard.at("file").get<std::string>();
      s.rank = shard.at("rank").get<int>();
      s.bytes = shard.at("bytes").get<int64_t>();
      s.checksum = shard.at("checksum").get<std::string>();
      s.pieces = (int)shard.at("pieces").size();
      x.info.shards.push_back(s);
      for (const auto& piece : shard.at("pieces")) {
        CheckpointTensorInfo& t = tensors[piece.at("tensor").get<std::string>()];
        t.name = piece.at("tensor").get<std::string>();
        t.shape = piece.at("shape").get<std::vector<int64_t>>();
        t.pieces++;
      }
    }
    for (auto& [name, t] : tensors) x.info.tensors.push_back(std::move(t));
  } catch (const nlohmann::json::exception& e) {
    throw Error(x.path + ": /meta/shards_json is malformed (" + e.what() + ")");
  }
  return x;
}

// Opens shard `s` of the index, checking that it exists, opens as HDF5 (a truncated file
// fails here) and holds every piece the index lists.
h5::Handle open_shard(const Index& x, const nlohmann::json& shard) {
  const std::string name = shard.at("file").get<std::string>();
  const fs::path file = fs::path(x.dir) / name;
  std::error_code ec;
  if (!fs::exists(file, ec))
    throw Error("checkpoint " + x.dir + " is missing " + name + " (the index lists " +
                std::to_string(shard.at("pieces").size()) + " pieces in it)");
  h5::Handle f = h5::file_open_read(file.string());
  for (const auto& piece : shard.at("pieces")) {
    const std::string dataset = piece.at("dataset").get<std::string>();
    if (H5Lexists(f, ckpt::kPieceGroup, H5P_DEFAULT) <= 0 ||
        H5Lexists(f, dataset.c_str(), H5P_DEFAULT) <= 0)
      throw Error(file.string() + " has no dataset " + dataset + " (a piece of tensor '" +
                  piece.at("tensor").get<std::string>() + "')");
  }
  return f;
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

namespace {

// Every piece of the index with its global number (shards in order, pieces in order).
struct PieceRef {
  int number;
  const nlohmann::json* shard;
  const nlohmann::json* piece;
};
std::vector<PieceRef> all_pieces(const Index& x) {
  std::vector<PieceRef> out;
  for (const auto& shard : x.shards)
    for (const auto& piece : shard.at("pieces")) out.push_back({(int)out.size(), &shard, &piece});
  return out;
}

uint64_t parse_checksum(const std::string& text, const std::string& context) {
  const std::string prefix = ckpt::kChecksumPrefix;
  if (text.rfind(prefix, 0) != 0 || text.size() != prefix.size() + 16)
    throw Error(context + ": checksum '" + text + "' is not " + prefix + "<16 hex digits>");
  return std::stoull(text.substr(prefix.size()), nullptr, 16);
}

}  // namespace

// The open index, its shard files (all opened and checked before any read) and its pieces.
struct CheckpointReader::State {
  h5::Quiet quiet;  // first: HDF5 stays quiet until the files are closed
  Index x;
  std::map<std::string, h5::Handle> shard_files;
  std::vector<PieceRef> pieces;
  h5::Handle tensor_group;
  bool verify_exact_pieces = false;
};

CheckpointReader::CheckpointReader(const std::string& path, bool verify_exact_pieces)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.x = open_index(path);
  for (const auto& shard : s.x.shards) s.shard_files[shard.at("file").get<std::string>()] = open_shard(s.x, shard);
  s.pieces = all_pieces(s.x);
  s.verify_exact_pieces = verify_exact_pieces;
  if (verify_exact_pieces) s.x.info.verified_pieces.assign(s.pieces.size(), 0);
  s.tensor_group = h5::group_open(s.x.file, ckpt::kTensorGroup);
}

CheckpointReader::~CheckpointReader() = default;

const LoadedCheckpoint& CheckpointReader::info() const { return s_->x.info; }

const CheckpointTensorInfo& CheckpointReader::tensor(const std::string& name) const {
  const auto& tensors = s_->x.info.tensors;
  const auto it = std::find_if(tensors.begin(), tensors.end(),
                               [&](const CheckpointTensorInfo& i) { return i.name == name; });
  if (it == tensors.end()) throw Error(s_->x.path + " has no tensor '" + name + "'");
  return *it;
}

std::vector<float> CheckpointReader::read_tensor(const std::string& name) {
  const CheckpointTensorInfo& info = tensor(name);
  std::vector<float> out((size_t)numel(info.shape));
  read({name, info.shape, out.data(), {}, {}});
  return out;
}

void CheckpointReader::read(const TensorDest& t) {
  State& s = *s_;
  const Index& x = s.x;
  const CheckpointTensorInfo& info = tensor(t.name);
  if (info.shape != t.shape)
    throw Error("tensor '" + t.name + "' in " + x.path + " has shape " + shape_string(info.shape) +
                ", expected " + shape_string(t.shape));
  std::vector<int64_t> offset = t.offset, count = t.count;
  if (offset.empty()) offset.assign(t.shape.size(), 0);
  if (count.empty()) count = t.shape;
  bool inside = offset.size() == t.shape.size() && count.size() == t.shape.size();
  for (size_t d = 0; inside && d < t.shape.size(); d++)
    inside = offset[d] >= 0 && count[d] > 0 && offset[d] + count[d] <= t.shape[d];
  if (!inside)
    throw Error("cannot read " + shape_string(count) + " at " + shape_string(offset) +
                " of tensor '" + t.name + "' of shape " + shape_string(t.shape));
  const std::string context = "cannot read tensor '" + t.name + "' from " + x.dir;
  const auto exact = std::find_if(s.pieces.begin(), s.pieces.end(), [&](const PieceRef& p) {
    return p.piece->at("tensor") == t.name && p.piece->at("offset") == nlohmann::json(offset) &&
           p.piece->at("count") == nlohmann::json(count);
  });
  if (exact != s.pieces.end()) {
    // The box is one piece (a resume in the writing layout): read it straight from its
    // shard file, without the virtual dataset's per-mapping work.
    const std::string file = exact->shard->at("file").get<std::string>();
    h5::Handle d = h5::dataset_open(s.shard_files.at(file), exact->piece->at("dataset").get<std::string>(),
                                    context);
    h5::checked_status(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data), context);
  } else {
    // Through the virtual dataset: HDF5 reads the part of each piece inside the box.
    h5::Handle d = h5::dataset_open(s.tensor_group, t.name, context);
    h5::Handle file_space(h5::checked(H5Dget_space(d), context), H5Sclose);
    std::vector<hsize_t> start(offset.begin(), offset.end()), n(count.begin(), count.end());
    h5::checked_status(
        H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, n.data(), nullptr),
        context);
    h5::Handle mem_space = h5::simple_space(count);
    h5::checked_status(H5Dread(d, H5T_NATIVE_FLOAT, mem_space, file_space, H5P_DEFAULT, t.data),
                       context);
  }
  if (!s.verify_exact_pieces || exact == s.pieces.end()) return;
  const PieceRef& p = *exact;
  const std::string expected = p.piece->at("checksum").get<std::string>();
  const std::string actual = checksum_string(t.data, (size_t)numel(count));
  if (actual != expected)
    throw Error("checksum mismatch in " + (fs::path(x.dir) / p.shard->at("file").get<std::string>()).string() +
                ": piece " + p.piece->at("dataset").get<std::string>() + " of tensor '" + t.name +
                "': the index says " + expected + ", the data hashes to " + actual);
  s.x.info.verified_pieces[p.number] = 1;
}

LoadedCheckpoint load_checkpoint(const std::string& path, const std::vector<TensorDest>& outputs,
                                 bool verify_exact_pieces) {
  CheckpointReader reader(path, verify_exact_pieces);
  for (const TensorDest& t : outputs) reader.read(t);
  return reader.info();
}

int64_t verify_checkpoint(const std::string& path, int part, int parts,
                          const std::vector<char>& skip) {
  check(parts >= 1 && part >= 0 && part < parts, "verify_checkpoint: bad part");
  h5::Quiet quiet;
  const Index x = open_index(path);
  int64_t bytes = 0;
  std::vector<float> data;
  int number = 0;  // the global piece number
  for (size_t i = 0; i < x.shards.size(); i++) {
    const auto& shard = x.shards[i];
    const std::string file = (fs::path(x.dir) / shard.at("file").get<std::string>()).string();
    h5::Handle f = open_shard(x, shard);
    std::vector<uint64_t> piece_hashes;
    for (const auto& piece : shard.at("pieces")) {
      const int n = number++;
      const std::string dataset = piece.at("dataset").get<std::string>();
      const std::string tensor = piece.at("tensor").get<std::string>();
      const std::string context = file + ": piece " + dataset + " of tensor '" + tensor + "'";
      const std::string expected = piece.at("checksum").get<std::string>();
      piece_hashes.push_back(parse_checksum(expected, context));
      if (n % parts != part || (n < (int)skip.size() && skip[n])) continue;
      h5::Handle d = h5::dataset_open(f, dataset, context);
      const auto count = piece.at("count").get<std::vector<int64_t>>();
      if (h5::dataset_shape(d) != count)
        throw Error(context + " has shape " + shape_string(h5::dataset_shape(d)) + ", the index says " +
                    shape_string(count));
      data.resize((size_t)numel(count));
      h5::checked_status(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()),
                         "cannot read " + context);
      const std::string actual = checksum_string(data.data(), data.size());
      if (actual != expected)
        throw Error("checksum mismatch in " + context + ": the index says " + expected +
                    ", the data hashes to " + actual);
      bytes += (int64_t)(data.size() * sizeof(float));
    }
    if ((int)i % parts == part && shard_checksum(piece_hashes) != shard.at("checksum").get<std::string>())
      throw Error("checksum mismatch for " + file + " as a whole: the index's shard checksum "
                  "does not match its pieces'");
  }
  return bytes;
}

}  // namespace tessera
