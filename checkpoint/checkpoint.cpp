// Writing checkpoints: shard + index into a .tmp directory, agree across ranks, rename,
// update `latest`, prune. Reading is in load.cpp, the HDF5 helpers in h5.cpp.
#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "checkpoint/format.h"
#include "checkpoint/h5.h"
#include "base/error.h"
#include "parallel/collectives.h"

namespace tessera {

namespace fs = std::filesystem;

// Checksums hash the in-memory float bytes, which must equal the little-endian file bytes.
static_assert(std::endian::native == std::endian::little, "checkpoints assume a little-endian host");

std::string checksum_string(uint64_t hash) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)hash);
  return std::string(ckpt::kChecksumPrefix) + buf;
}

std::string checksum_string(const float* data, size_t numel) {
  return checksum_string(xxhash64(data, numel * sizeof(float)));
}

std::string shard_checksum(const std::vector<uint64_t>& piece_hashes) {
  return checksum_string(xxhash64(piece_hashes.data(), piece_hashes.size() * sizeof(uint64_t)));
}

std::string checkpoint_dir_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step_%06lld", (long long)step);
  return buf;
}

namespace {

// Runs f(), turning any exception into its message ("" on success).
template <class F>
std::string capture(F&& f) {
  try {
    f();
    return "";
  } catch (const std::exception& e) {
    return e.what()[0] ? e.what() : "unknown error";
  }
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The piece with empty offset/count filled in.
TensorPiece normalised(const TensorPiece& p) {
  TensorPiece q = p;
  if (q.offset.empty()) q.offset.assign(q.shape.size(), 0);
  if (q.count.empty()) q.count = q.shape;
  return q;
}

void validate(const CheckpointMeta& meta, const std::vector<TensorPiece>& pieces) {
  check(meta.step >= 0, "checkpoint step must be >= 0, got " + std::to_string(meta.step));
  check(!meta.run_id.empty() && meta.run_id.find('/') == std::string::npos,
        "checkpoint run id '" + meta.run_id + "' must be non-empty without '/'");
  for (const TensorPiece& t : pieces) {
    // '/' would create HDF5 groups; '%' is a pattern character in virtual dataset names.
    check(!t.name.empty() && t.name.find_first_of("/%") == std::string::npos,
          "checkpoint tensor name '" + t.name + "' must be non-empty without '/' or '%'");
    const bool positive =
        std::all_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d > 0; });
    check(!t.shape.empty() && positive,
          "checkpoint tensor '" + t.name + "' has invalid shape " + shape_string(t.shape));
    const TensorPiece q = normalised(t);
    bool inside = q.offset.size() == q.shape.size() && q.count.size() == q.shape.size();
    for (size_t d = 0; inside && d < q.shape.size(); d++)
      inside = q.offset[d] >= 0 && q.count[d] > 0 && q.offset[d] + q.count[d] <= q.shape[d];
    check(inside, "checkpoint piece of '" + t.name + "' at " + shape_string(q.offset) + " of " +
                      shape_string(q.count) + " is outside its shape " + shape_string(t.shape));
    check(t.data != nullptr, "checkpoint tensor '" + t.name + "' has no data");
  }
}

// The first way in which `shards` (every rank's shard description) fails to cover each
// logical tensor exactly once, or "".
std::string coverage_problem(const nlohmann::json& shards) {
  struct Box {
    std::vector<int64_t> offset, count;
  };
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<Box>>> tensors;
  for (const auto& shard : shards)
    for (const auto& piece : shard.at("pieces")) {
      auto& [shape, boxes] = tensors[piece.at("tensor").get<std::string>()];
      const auto s = piece.at("shape").get<std::vector<int64_t>>();
      if (!shape.empty() && shape != s)
        return "tensor '" + piece.at("tensor").get<std::string>() + "' is written with shapes " +
               shape_string(shape) + " and " + shape_string(s);
      shape = s;
      boxes.push_back({piece.at("offset").get<std::vector<int64_t>>(),
                       piece.at("count").get<std::vector<int64_t>>()});
    }
  for (const auto& [name, entry] : tensors) {
    const auto& [shape, boxes] = entry;
    int64_t covered = 0;
    for (size_t i = 0; i < boxes.size(); i++) {
      covered += numel(boxes[i].count);
      for (size_t j = 0; j < i; j++) {
        bool overlap = true;
        for (size_t d = 0; d < shape.size() && overlap; d++)
          overlap = boxes[i].offset[d] < boxes[j].offset[d] + boxes[j].count[d] &&
                    boxes[j].offset[d] < boxes[i].offset[d] + boxes[i].count[d];
        if (overlap)
          return "tensor '" + name + "' is written twice at " + shape_string(boxes[i].offset);
      }
    }
    if (covered != numel(shape))
      return "the pieces of tensor '" + name + "' cover " + std::to_string(covered) + " of its " +
             std::to_string(numel(shape)) + " elements";
  }
  return "";
}

std::string errno_text() { return std::strerror(errno); }

// fsync a file or directory, so that a rename after it publishes durable contents.
void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  if (fd < 0) throw Error("cannot open " + p.string() + " to fsync: " + errno_text());
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) throw Error("cannot fsync " + p.string() + ": " + err);
}

void write_text_file_synced(const fs::path& p, const std::string& text) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create " + p.string() + ": " + errno_text());
  const bool ok = ::write(fd, text.data(), text.size()) == (ssize_t)text.size() && ::fsync(fd) == 0;
  const std::string err = ok ? "" : errno_text();
  if (::close(fd) != 0 || !ok)
    throw Error("cannot write " + p.string() + ": " + (ok ? errno_text() : err));
}

// Fails early, with a clear message, when the file system visibly lacks the room for the
// shard (quotas are not seen here; a write that fails later is still handled).
void check_free_space(const fs::path& root, const std::vector<TensorPiece>& pieces) {
  struct statvfs st {};
  if (::statvfs(root.c_str(), &st) != 0) return;  // unknown: let the writes tell
  int64_t need = 64 << 10;  // file headers; then the data and ~8 KiB of metadata per piece
  for (const TensorPiece& t : pieces) need += numel(normalised(t).count) * (int64_t)sizeof(float) + (8 << 10);
  const double avail = (double)st.f_bavail * (double)st.f_frsize;
  if (avail < (double)need) {
    char msg[160];
    std::snprintf(msg, sizeof msg, ": it needs about %.1f MiB, %.1f MiB are free",
                  (double)need / (1 << 20), avail / (1 << 20));
    throw Error("not enough space for a checkpoint in " + root.string() + msg);
  }
}

// Creates `file`, lets body(file_id) fill it, and closes it, checking the close (where
// HDF5 flushes its metadata).
template <class Body>
void write_h5_file(const std::string& file, Body&& body) {
  h5::Handle f = h5::file_create(file);
  try {
    body(f.get());
  } catch (...) {
    // HDF5 1.10 cannot survive a failed H5Fclose: the file id is left pointing at freed
    // memory and the library crashes at exit. Give the space back (the file is discarded
    // anyway) so that closing, which flushes a few KiB of metadata, can succeed on a
    // full disk.
    if (::truncate(file.c_str(), 0) != 0) { /* nothing better to do */ }
    throw;
  }
  if (!f.close()) h5::fail("cannot write " + file);
}

// rank_XXXXX.h5: piece k as dataset /pieces/<k>, contiguous float32, with attributes
// naming its tensor, the tensor's shape, the box and its checksum. Returns the shard's
// description for the index (the same facts, plus the shard's own checksum).
nlohmann::json write_shard(const fs::path& path, const CheckpointMeta& meta, int rank,
                           const std::vector<TensorPiece>& pieces) {
  const std::string file = path.string();
  nlohmann::json described = nlohmann::json::array();
  std::vector<uint64_t> piece_hashes;
  int64_t bytes = 0;
  write_h5_file(file, [&](hid_t f) {
    h5::write_attr(f, "format", std::string(ckpt::kShardFormat));
    h5::write_attr(f, "format_version", (int64_t)ckpt::kFormatVersion);
    h5::write_attr(f, "rank", (int64_t)rank);
    h5::write_attr(f, "step", meta.step);
    h5::write_attr(f, "run_id", meta.run_id);
    h5::Handle g = h5::group_create(f, ckpt::kPieceGroup);
    for (size_t k = 0; k < pieces.size(); k++) {
      const TensorPiece t = normalised(pieces[k]);
      const std::string dataset = std::to_string(k);
      const std::string context = "cannot write " + file + " (tensor " + t.name + ")";
      h5::Handle space = h5::simple_space(t.count);
      h5::Handle d(h5::checked(H5Dcreate2(g, dataset.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT,
                                          H5P_DEFAULT, H5P_DEFAULT), context),
                   H5Dclose);
      h5::checked_status(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data), context);
      const size_t n = (size_t)numel(t.count);
      piece_hashes.push_back(xxhash64(t.data, n * sizeof(float)));
      const std::string sum = checksum_string(piece_hashes.back());
      bytes += (int64_t)(n * sizeof(float));
      h5::write_attr(d, "tensor", t.name);
      h5::write_attr(d, ckpt::kChecksumAttr, sum);
      described.push_back({{"dataset", std::string("/") + ckpt::kPieceGroup + "/" + dataset},
                           {"tensor", t.name}, {"shape", t.shape}, {"offset", t.offset},
                           {"count", t.count}, {"checksum", sum}});
    }
  });
  return {{"file", path.filename().string()}, {"rank", rank}, {"bytes", bytes},
          {"checksum", shard_checksum(piece_hashes)}, {"pieces", described}};
}

// index.h5: metadata, the shards, and every logical tensor as a virtual dataset over the
// pieces that hold it.
void write_index(const fs::path& path, const CheckpointMeta& meta, int world_size,
                 const nlohmann::json& shards) {
  const std::string file = path.string();
  struct Mapping {
    std::string file, dataset;
    std::vector<int64_t> offset, count;
  };
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<Mapping>>> tensors;
  for (const auto& shard : shards)
    for (const auto& piece : shard.at("pieces")) {
      auto& [shape, maps] = tensors[piece.at("tensor").get<std::string>()];
      shape = piece.at("shape").get<std::vector<int64_t>>();
      maps.push_back({shard.at("file").get<std::string>(), piece.at("dataset").get<std::string>(),
                      piece.at("offset").get<std::vector<int64_t>>(),
                      piece.at("count").get<std::vector<int64_t>>()});
    }
  write_h5_file(file, [&](hid_t f) {
    h5::write_attr(f, "format", std::string(ckpt::kIndexFormat));
    h5::write_attr(f, "format_version", (int64_t)ckpt::kFormatVersion);
    h5::write_attr(f, "step", meta.step);
    h5::write_attr(f, "tokens_seen", meta.tokens_seen);
    h5::write_attr(f, "data_position", meta.data_position);
    h5::write_attr(f, "run_id", meta.run_id);
    h5::write_attr(f, "world_size", (int64_t)world_size);
    h5::write_attr(f, "library_version", meta.library_version);
    {
      // Datasets rather than attributes: a recipe may outgrow HDF5's 64 KiB attribute limit.
      h5::Handle m = h5::group_create(f, ckpt::kMetaGroup);
      auto json_or_empty = [](const nlohmann::json& j) { return j.is_null() ? std::string("{}") : j.dump(); };
      h5::write_string_dataset(m, "recipe_yaml", meta.recipe_yaml);
      h5::write_string_dataset(m, "layout_json", json_or_empty(meta.layout));
      h5::write_string_dataset(m, "rng_json", json_or_empty(meta.rng));
      h5::write_string_dataset(m, "extra_json", json_or_empty(meta.extra));
      h5::write_string_dataset(m, "shards_json", shards.dump());
    }
    h5::Handle g = h5::group_create(f, ckpt::kTensorGroup);
    // NaN, not 0, where a source is unreadable: h5py users who skip our checks see garbage
    // rather than plausible zeros.
    const float fill = std::nanf("");
    for (const auto& [name, entry] : tensors) {
      const auto& [shape, maps] = entry;
      const std::string context = "cannot write " + file + " (tensor " + name + ")";
      h5::Handle vspace = h5::simple_space(shape);
      h5::Handle dcpl(h5::checked(H5Pcreate(H5P_DATASET_CREATE), context), H5Pclose);
      h5::checked_status(H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &fill), context);
      for (const Mapping& m : maps) {
        std::vector<hsize_t> start(m.offset.begin(), m.offset.end()), count(m.count.begin(), m.count.end());
        h5::checked_status(H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start.data(), nullptr,
                                               count.data(), nullptr), context);
        h5::Handle sspace = h5::simple_space(m.count);
        // The source file name is relative: HDF5 looks for it beside index.h5, so the
        // directory can be renamed and moved as a whole.
        h5::checked_status(
            H5Pset_virtual(dcpl, vspace, m.file.c_str(), m.dataset.c_str(), sspace), context);
      }
      h5::checked_status(H5Sselect_all(vspace), context);
      h5::Handle d(h5::checked(H5Dcreate2(g, name.c_str(), H5T_IEEE_F32LE, vspace, H5P_DEFAULT, dcpl,
                                          H5P_DEFAULT), context),
                   H5Dclose);
      h5::write_attr(d, "pieces", (int64_t)maps.size());
    }
  });
}

// Every rank's shard description (null for a rank without pieces), on rank 0; {} elsewhere.
nlohmann::json gather_shards(Communicator& world, const nlohmann::json& mine) {
  const std::vector<std::string> all = all_gather_strings(world, mine.dump());
  if (world.rank() != 0) return {};
  nlohmann::json shards = nlohmann::json::array();
  for (const std::string& text : all) {
    auto shard = nlohmann::json::parse(text);
    if (!shard.is_null()) shards.push_back(std::move(shard));
  }
  return shards;
}

// Complete checkpoints in `root`, (step, name), oldest first.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const fs::path& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    int64_t step = 0;
    if (ckpt::parse_step_dir_name(name, &step) && e.is_directory(ec)) out.emplace_back(step, name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Moves tmp to final (replacing an older directory of the same name), points `latest`
// at it, and makes both renames durable.
void publish(const fs::path& root, const fs::path& tmp, const fs::path& final_dir,
             const std::string& run_id) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_dir, ec)) {
    // rename(2) cannot replace a non-empty directory: move the old one aside first. Its
    // ".old-" name is not a checkpoint name, so `latest` resolution never picks it.
    old = root / (final_dir.filename().string() + ".old-" + run_id);
    fs::remove_all(old, ec);
    fs::rename(final_dir, old, ec);
    if (ec) throw Error("cannot replace " + final_dir.string() + ": " + ec.message());
  }
  fs::rename(tmp, final_dir, ec);
  if (ec && !old.empty()) {
    std::error_code ignored;
    fs::rename(old, final_dir, ignored);  // put the previous checkpoint back
  }
  if (ec)
    throw Error("cannot rename " + tmp.string() + " to " + final_dir.string() + ": " +
                ec.message());
  const fs::path latest_tmp = root / (std::string(ckpt::kLatestFile) + ".tmp-" + run_id);
  write_text_file_synced(latest_tmp, final_dir.filename().string() + "\n");
  fs::rename(latest_tmp, root / ckpt::kLatestFile, ec);
  if (ec) throw Error("cannot update " + (root / ckpt::kLatestFile).string() + ": " + ec.message());
  fsync_path(root, true);
  if (!old.empty()) fs::remove_all(old, ec);
}

// Deletes complete checkpoints beyond the newest keep_last (never `keep`). A failure
// here leaves a complete, published checkpoint, so it warns instead of failing the run.
void prune(const fs::path& root, int keep_last, const std::string& keep) {
  if (keep_last <= 0) return;
  auto all = complete_checkpoints(root);
  std::erase_if(all, [&](const auto& c) { return c.second == keep; });
  const int excess = (int)all.size() - (keep_last - 1);
  for (int i = 0; i < excess; i++) {
    std::error_code ec;
    fs::remove_all(root / all[i].second, ec);
    if (ec)
      std::fprintf(stderr, "warning: cannot delete old checkpoint %s: %s\n",
                   (root / all[i].second).c_str(), ec.message().c_str());
  }
}

// Fault injection for the crash tests: TESSERA_TEST_KILL_IN_SAVE="RANK:STEP" kills world
// rank RANK with SIGKILL (no clean-up of any kind) right after it has written and fsync'd
// its shard of step STEP, before the checkpoint is published. Unset: nothing happens.
void maybe_die_mid_save(int rank, int64_t step) {
  const char* spec = std::getenv("TESSERA_TEST_KILL_IN_SAVE");
  int at_rank = -1;
  long long at_step = -1;
  if (spec && std::sscanf(spec, "%d:%lld", &at_rank, &at_step) == 2 && at_rank == rank &&
      at_step == step)
    std::raise(SIGKILL);
}

}  // namespace

namespace {

struct SavePaths {
  fs::path root, final_dir, tmp;
  std::string name;
};

SavePaths save_paths(const std::string& dir, const CheckpointMeta& meta) {
  SavePaths p;
  p.root = dir.empty() ? fs::path(".") : fs::path(dir);
  p.name = checkpoint_dir_name(meta.step);
  p.final_dir = p.root / p.name;
  p.tmp = p.root / (p.name + ckpt::kTmpMarker + meta.run_id);
  return p;
}

}  // namespace

CheckpointSave::CheckpointSave(const std::string& dir, const CheckpointMeta& meta,
                               const std::vector<TensorPiece>& pieces, int keep_last, bool async,
                               Communicator* world)
    : dir_(dir), meta_(meta), keep_last_(keep_last),
      world_(world ? *world : single_process_communicator()), pieces_(pieces),
      start_(std::chrono::steady_clock::now()) {
  rank_ = world_.rank();
  const SavePaths paths = save_paths(dir, meta);
  // 1. Rank 0 makes the .tmp directory; every rank checks its own pieces meanwhile.
  std::string error = capture([&] {
    validate(meta, pieces);
    if (rank_ != 0) return;
    std::error_code ec;
    fs::create_directories(paths.root, ec);
    if (ec) throw Error("cannot create checkpoint directory " + paths.root.string() + ": " + ec.message());
    fs::remove_all(paths.tmp, ec);  // left by an earlier failed attempt of this run
    if (!fs::create_directory(paths.tmp, ec) || ec)
      throw Error("cannot create " + paths.tmp.string() + ": " + (ec ? ec.message() : "it exists"));
  });
  error = first_error_of_all(world_, error);
  if (!error.empty()) {
    if (rank_ == 0) {
      std::error_code ec;
      fs::remove_all(paths.tmp, ec);
    }
    throw Error(error);
  }
  // 2. This rank's shard: now, or in the background from a copy.
  if (!async) {
    write_this_rank();
  } else {
    copies_.reserve(pieces_.size());
    for (TensorPiece& p : pieces_) {
      const TensorPiece q = normalised(p);
      copies_.emplace_back(p.data, p.data + numel(q.count));
      p.data = copies_.back().data();
    }
    writer_ = std::thread([this] { write_this_rank(); });
  }
  begin_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

// May run on the background thread: no communication here (the process may not be
// MPI_THREAD_MULTIPLE); the rank was taken by the constructor.
void CheckpointSave::write_this_rank() {
  const SavePaths paths = save_paths(dir_, meta_);
  const int rank = rank_;
  error_ = capture([&] {
    if (pieces_.empty()) return;
    h5::Quiet quiet;
    check_free_space(paths.root, pieces_);
    const fs::path shard = paths.tmp / ckpt::rank_file_name(rank);
    shard_ = write_shard(shard, meta_, rank, pieces_);
    fsync_path(shard, false);
    maybe_die_mid_save(rank, meta_.step);
  });
  written_ = true;
}

CheckpointSave::~CheckpointSave() {
  if (writer_.joinable()) writer_.join();
}

SaveInfo CheckpointSave::finish() {
  check(!finished_, "CheckpointSave::finish called twice");
  finished_ = true;
  if (writer_.joinable()) writer_.join();
  copies_.clear();
  const SavePaths paths = save_paths(dir_, meta_);
  const bool lead = rank_ == 0;
  std::string error = first_error_of_all(world_, error_);
  // 3. Rank 0 checks that the pieces cover every tensor once, then writes the index.
  nlohmann::json shards;
  if (error.empty()) shards = gather_shards(world_, shard_);
  if (error.empty() && lead)
    error = capture([&] {
      const std::string gap = coverage_problem(shards);
      if (!gap.empty()) throw Error("checkpoint of step " + std::to_string(meta_.step) + ": " + gap);
      h5::Quiet quiet;
      write_index(paths.tmp / ckpt::kIndexFile, meta_, world_.size(), shards);
      fsync_path(paths.tmp / ckpt::kIndexFile, false);
      fsync_path(paths.tmp, true);
    });
  error = first_error_of_all(world_, error);
  // 4. Publish: rename, then `latest`.
  if (error.empty() && lead)
    error = capture([&] { publish(paths.root, paths.tmp, paths.final_dir, meta_.run_id); });
  error = first_error_of_all(world_, error);
  if (!error.empty()) {
    if (lead) {
      std::error_code ec;
      fs::remove_all(paths.tmp, ec);
    }
    throw Error(error);
  }
  SaveInfo info;
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (lead) prune(paths.root, keep_last_, paths.name);  // after `latest`: not part of the save
  info.path = paths.final_dir.string();
  for (const auto& shard : shards) {
    info.bytes += shard.at("bytes").get<int64_t>();
    info.checksums.emplace_back(shard.at("file").get<std::string>(),
                                shard.at("checksum").get<std::string>());
  }
  return info;
}

std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta,
                            const std::vector<TensorPiece>& pieces, int keep_last, SaveInfo* info,
                            Communicator* world) {
  CheckpointSave save(dir, meta, pieces, keep_last, /*async=*/false, world);
  const SaveInfo done = save.finish();
  if (info) *info = done;
  return done.path;
}

}  // namespace tessera
