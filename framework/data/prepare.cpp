// Text file -> train/val token shards + meta.json (see prepare.h).
#include "framework/data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <span>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/data/sha256.h"
#include "framework/data/shard.h"
#include "framework/data/tokenizer.h"
#include "base/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

void check_options(const PrepareOptions& o) {
  check(!o.input.empty(), "data prepare: no input file given (expected --input FILE)");
  check(!o.out_dir.empty(), "data prepare: no output directory given (expected --out DIR)");
  check(o.val_fraction >= 0.0 && o.val_fraction < 1.0,
        "data prepare: val_fraction " + std::to_string(o.val_fraction) +
            " is out of range (expected 0 <= fraction < 1)");
  check(o.shard_tokens >= 1 && o.shard_tokens <= kShardMaxTokens,
        "data prepare: shard_tokens " + std::to_string(o.shard_tokens) +
            " is out of range (expected 1.." + std::to_string(kShardMaxTokens) + ")");
}

std::string read_text(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw Error(path + ": input text file does not exist or is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open input text file");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error(path + ": read error");
  std::string text = s.str();
  check(!text.empty(), path + ": input text file is empty");
  return text;
}

// Appends ids as uint16; prepare_data has checked that the vocabulary fits.
void append(std::vector<uint16_t>& out, const std::vector<int>& ids) {
  for (int id : ids) out.push_back(static_cast<uint16_t>(id));
}

// The whole text as tokens. With an end-of-text token, every document (text between
// "\n\n" separators, which stay attached to the document before them) starts with it.
std::vector<uint16_t> tokenize(const Tokenizer& tok, std::string_view text) {
  std::vector<uint16_t> tokens;
  if (dynamic_cast<const ByteTokenizer*>(&tok)) {
    // Bytes are their own ids: skip encode()'s int vector (4 bytes per input byte).
    tokens.assign(reinterpret_cast<const unsigned char*>(text.data()),
                  reinterpret_cast<const unsigned char*>(text.data()) + text.size());
    return tokens;
  }
  tokens.reserve(text.size() / 3);
  if (tok.eot_token() < 0) {
    append(tokens, tok.encode(text));
    return tokens;
  }
  size_t start = 0;
  while (start < text.size()) {
    const size_t sep = text.find("\n\n", start);
    const size_t end = sep == std::string_view::npos ? text.size() : sep + 2;
    tokens.push_back(static_cast<uint16_t>(tok.eot_token()));
    append(tokens, tok.encode(text.substr(start, end - start)));
    start = end;
  }
  return tokens;
}

// Writes tokens as <dir>/<prefix>_000000.bin, ... of at most shard_tokens each.
std::vector<std::string> write_shards(const std::string& dir, const std::string& prefix,
                                      std::span<const uint16_t> tokens, int64_t shard_tokens) {
  std::vector<std::string> files;
  for (size_t begin = 0; begin < tokens.size(); begin += static_cast<size_t>(shard_tokens)) {
    const size_t count = std::min(tokens.size() - begin, static_cast<size_t>(shard_tokens));
    char name[64];
    std::snprintf(name, sizeof(name), "%s_%06zu.bin", prefix.c_str(), files.size());
    const std::string path = (fs::path(dir) / name).string();
    write_shard(path, tokens.subspan(begin, count));
    files.push_back(path);
  }
  return files;
}

// Deletes train_NNNNNN.bin / val_NNNNNN.bin files in dir that this run did not write.
std::vector<std::string> remove_stale_shards(const std::string& dir,
                                             const std::set<std::string>& written) {
  static const std::regex kShardName(R"((train|val)_[0-9]{6,}\.bin)");
  std::vector<std::string> removed;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !std::regex_match(name, kShardName)) continue;
    if (written.count(entry.path().string())) continue;
    std::error_code ec;
    fs::remove(entry.path(), ec);
    if (ec) throw Error(entry.path().string() + ": cannot remove stale shard: " + ec.message());
    removed.push_back(entry.path().string());
  }
  return removed;
}

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw Error(tmp + ": cannot write");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path + ": cannot rename " + tmp + " into place: " + ec.message());
}

std::vector<std::string> file_names(const std::vector<std::string>& paths) {
  std::vector<std::string> names;
  for (const auto& p : paths) names.push_back(fs::path(p).filename().string());
  return names;
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& o) {
  check_options(o);
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(o.tokenizer, o.encoder, o.merges);
  check(tok->vocab_size() <= 65536,
        "tokenizer " + o.tokenizer + ": vocabulary of " + std::to_string(tok->vocab_size()) +
            " does not fit uint16 token shards (at most 65536)");

  const std::string text = read_text(o.input);
  const std::vector<uint16_t> tokens = tokenize(*tok, text);
  const int64_t total = static_cast<int64_t>(tokens.size());

  // The validation set is the end of the text, so it is text the model never trains on
  // (a random split of overlapping windows would leak training text into validation).
  const int64_t val_tokens =
      o.val_fraction > 0 ? static_cast<int64_t>(std::llround(total * o.val_fraction)) : 0;
  const int64_t train_tokens = total - val_tokens;
  if (o.val_fraction > 0 && val_tokens == 0) {
    throw Error(o.input + ": " + std::to_string(total) + " tokens are too few to hold out " +
                "a validation fraction of " + std::to_string(o.val_fraction) +
                " (use a larger input, a larger fraction, or fraction 0)");
  }
  check(train_tokens > 0, o.input + ": val_fraction " + std::to_string(o.val_fraction) +
                              " leaves no training tokens out of " + std::to_string(total));

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec || !fs::is_directory(o.out_dir)) {
    throw Error(o.out_dir + ": cannot create output directory" +
                (ec ? ": " + ec.message() : std::string(" (a file of that name exists)")));
  }

  PrepareResult r;
  const std::span<const uint16_t> all(tokens);
  r.train_files = write_shards(o.out_dir, "train", all.first(train_tokens), o.shard_tokens);
  r.val_files = write_shards(o.out_dir, "val", all.subspan(train_tokens), o.shard_tokens);
  r.train_tokens = train_tokens;
  r.val_tokens = val_tokens;
  r.vocab_size = tok->vocab_size();
  r.eot_token = tok->eot_token();
  r.source_sha256 = sha256_hex(text);

  std::set<std::string> written(r.train_files.begin(), r.train_files.end());
  written.insert(r.val_files.begin(), r.val_files.end());
  r.removed_stale = remove_stale_shards(o.out_dir, written);

  nlohmann::ordered_json meta;
  meta["format"] = "llm.c token shards: 256 int32 header (magic 20240520, version 1, count), "
                   "then uint16 tokens";
  meta["tokenizer"] = o.tokenizer;
  if (o.tokenizer == "gpt2") {
    meta["encoder"] = o.encoder;
    meta["merges"] = o.merges;
  }
  meta["vocab_size"] = r.vocab_size;
  meta["eot_token"] = r.eot_token >= 0 ? nlohmann::ordered_json(r.eot_token) : nullptr;
  meta["source"] = o.input;
  meta["source_bytes"] = text.size();
  meta["source_sha256"] = r.source_sha256;
  meta["val_fraction"] = o.val_fraction;
  meta["shard_tokens"] = o.shard_tokens;
  meta["train_tokens"] = r.train_tokens;
  meta["val_tokens"] = r.val_tokens;
  meta["train_files"] = file_names(r.train_files);
  meta["val_files"] = file_names(r.val_files);
  r.meta_path = (fs::path(o.out_dir) / "meta.json").string();
  write_text_atomically(r.meta_path, meta.dump(2) + "\n");
  return r;
}

TokenizerFiles data_tokenizer_files(const std::string& shard) {
  const std::string meta = (fs::path(shard).parent_path() / "meta.json").string();
  std::error_code ec;
  if (!fs::exists(meta, ec))
    throw Error(meta + ": not found (the tokenizer of " + shard + " is unknown: data prepared "
                "by `tessera data prepare` has one)");
  try {
    const auto j = nlohmann::json::parse(std::ifstream(meta));
    return {j.at("tokenizer").get<std::string>(), j.value("encoder", ""), j.value("merges", "")};
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta + ": " + e.what());
  }
}

std::unique_ptr<Tokenizer> data_tokenizer(const std::string& shard) {
  const TokenizerFiles files = data_tokenizer_files(shard);
  try {
    return make_tokenizer(files.kind, files.encoder, files.merges);
  } catch (const Error& e) {
    throw Error((fs::path(shard).parent_path() / "meta.json").string() + ": " + e.what());
  }
}

}  // namespace tessera
