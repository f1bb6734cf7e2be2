#include "framework/tools/export.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "base/error.h"
#include "framework/data/prepare.h"
#include "framework/data/sha256.h"
#include "framework/data/shard.h"
#include "framework/tools/export_formats.h"
#include "framework/tools/lineage.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

// The export is written to `tmp`, a sibling of `out`, and renamed to `out` when complete;
// anything left at `tmp` by a failure is removed.
struct Staging {
  fs::path out, tmp;
  bool published = false;

  Staging(const std::string& out_path, bool force, bool directory)
      : out(fs::path(out_path).lexically_normal()) {
    if (!out.has_filename()) out = out.parent_path();
    std::error_code ec;
    if (fs::exists(out, ec) && !force) throw Error(out.string() + " exists (pass --force to replace it)");
    const fs::path parent = fs::absolute(out).parent_path();
    if (!fs::is_directory(parent, ec))
      throw Error("cannot write " + out.string() + ": the directory " + parent.string() + " does not exist");
    tmp = out;
    tmp += ".tmp-" + std::to_string(getpid());
    fs::remove_all(tmp, ec);
    if (directory && !fs::create_directory(tmp, ec))
      throw Error("cannot create " + tmp.string() + ": " + ec.message());
  }
  ~Staging() {
    std::error_code ec;
    if (!published) fs::remove_all(tmp, ec);
  }
  // With --force the old `out` is moved aside first and removed once the new one is in place.
  void publish() {
    std::error_code ec;
    fs::path old;
    if (fs::exists(out, ec)) {
      old = out;
      old += ".old-" + std::to_string(getpid());
      fs::rename(out, old, ec);
      if (ec) throw Error("cannot replace " + out.string() + ": " + ec.message());
    }
    fs::rename(tmp, out, ec);
    if (ec) throw Error("cannot rename " + tmp.string() + " to " + out.string() + ": " + ec.message());
    published = true;
    if (!old.empty()) fs::remove_all(old, ec);
  }
};

std::vector<ExportedFile> describe_files(const fs::path& out) {
  std::vector<fs::path> paths;
  if (fs::is_directory(out)) {
    for (const auto& entry : fs::directory_iterator(out)) paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
  } else {
    paths.push_back(out);
  }
  std::vector<ExportedFile> files;
  for (const fs::path& p : paths)
    files.push_back({p.string(), (int64_t)fs::file_size(p), sha256_file_hex(p.string())});
  return files;
}

}  // namespace

TokenizerFiles model_tokenizer(const CheckpointWeights& weights) {
  const std::string& pattern = weights.recipe().data.train;
  std::vector<std::string> shards;
  try {
    shards = expand_shard_pattern(pattern);
  } catch (const Error& e) {
    throw Error(weights.checkpoint().path + ": the tokenizer is that of the training data (data.train '" +
                pattern + "'), which cannot be found: " + e.what());
  }
  return data_tokenizer_files(shards.front());
}

ExportResult export_model(const ExportOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  check(o.format == "safetensors" || o.format == "gguf",
        "tessera export: --format '" + o.format + "' is not one of gguf, safetensors");
  const ExportDtype dtype = export_dtype_from_name(o.dtype, "tessera export: --dtype");
  check(o.format == "gguf" || dtype != ExportDtype::q8_0,
        "tessera export: --dtype q8_0 is a GGUF type; safetensors holds f32, f16 or bf16");
  check(!o.out.empty(), "tessera export: --out is required");
  check(o.max_shard_bytes > 0, "tessera export: the shard size must be positive");
  const bool directory = o.format == "safetensors";
  Staging staging(o.out, o.force, directory);  // refuses an existing `out` before any reading
  const fs::path lineage_file = lineage_path(staging.out.string(), directory);
  const fs::path lineage_tmp = lineage_file.string() + ".tmp-" + std::to_string(getpid());
  CheckpointWeights weights(o.checkpoint);
  ExportResult result;
  result.path = staging.out.string();
  result.checkpoint = weights.checkpoint().path;
  result.format = o.format;
  result.dtype = o.dtype;
  result.tensors = directory ? write_safetensors_export(weights, dtype, o.max_shard_bytes, staging.tmp.string())
                             : write_gguf_export(weights, dtype, staging.tmp.string());
  staging.publish();
  result.files = describe_files(staging.out);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The lineage goes beside (GGUF) or into (safetensors) the export, then into the log of
  // the run that wrote the checkpoint when that log is here.
  write_lineage(lineage_tmp.string(), lineage_file.string(), weights, result);
  result.lineage = lineage_file.string();
  result.run_log = record_export_in_run_log(weights, result);
  return result;
}

}  // namespace tessera
