// `tessera data prepare`: text -> train/val shards + meta.json; also SHA-256 and the CLI.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/cli/commands/commands.h"
#include "framework/data/prepare.h"
#include "framework/data/sha256.h"
#include "framework/data/shard.h"
#include "framework/data/tokenizer.h"
#include "base/error.h"
#include "tests/unit/test_support.h"

namespace fs = std::filesystem;
using tessera::Error;
using tessera::test_support::fresh_dir;
using tessera::test_support::write_text;

namespace {

std::string sample_text() {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "Line " + std::to_string(i) + ": in the beginning was the byte.\n";
    if (i % 7 == 0) text += "\n";
  }
  text += "caf\xc3\xa9 \xff\x00 end";  // UTF-8 and raw bytes: the byte tokenizer takes anything
  text.push_back('\0');
  return text;
}

// Writes `text` to <dir>/input.txt; returns that path.
std::string write_input(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/input.txt";
  write_text(path, text);
  return path;
}

// Options that prepare `text` (written to <dir>/input.txt) into <dir>/out; the rest are
// the defaults.
tessera::PrepareOptions options_for(const std::string& dir, const std::string& text) {
  tessera::PrepareOptions o;
  o.input = write_input(dir, text);
  o.out_dir = dir + "/out";
  return o;
}

std::string decode_shards(const std::vector<std::string>& files) {
  std::string out;
  for (const auto& f : files) {
    for (uint16_t t : tessera::read_shard(f)) out.push_back(static_cast<char>(t));
  }
  return out;
}

}  // namespace

TEST(DataPrepare, ByteShardsDecodeBackToTheText) {
  const std::string text = sample_text();
  tessera::PrepareOptions o = options_for(fresh_dir("prepare_bytes"), text);
  o.val_fraction = 0.1;
  const tessera::PrepareResult r = tessera::prepare_data(o);

  const int64_t n = int64_t(text.size());
  EXPECT_EQ(r.val_tokens, std::llround(n * 0.1));
  EXPECT_EQ(r.train_tokens + r.val_tokens, n);
  EXPECT_EQ(r.vocab_size, 256);
  EXPECT_EQ(r.eot_token, -1);
  ASSERT_EQ(r.train_files, std::vector<std::string>{o.out_dir + "/train_000000.bin"});
  ASSERT_EQ(r.val_files, std::vector<std::string>{o.out_dir + "/val_000000.bin"});
  // Validation is the END of the text: held-out text, not a random sample.
  EXPECT_EQ(decode_shards(r.train_files), text.substr(0, size_t(r.train_tokens)));
  EXPECT_EQ(decode_shards(r.val_files), text.substr(size_t(r.train_tokens)));

  std::ifstream meta_in(r.meta_path);
  const nlohmann::json meta = nlohmann::json::parse(meta_in);
  EXPECT_EQ(meta["tokenizer"], "bytes");
  EXPECT_EQ(meta["vocab_size"], 256);
  EXPECT_EQ(meta["train_tokens"], r.train_tokens);
  EXPECT_EQ(meta["val_tokens"], r.val_tokens);
  EXPECT_EQ(meta["source"], o.input);
  EXPECT_EQ(meta["source_sha256"], tessera::sha256_file_hex(o.input));
  EXPECT_EQ(meta["train_files"], nlohmann::json::array({"train_000000.bin"}));
}

TEST(DataPrepare, SmallShardsSplitInOrderAndStaleOnesAreRemoved) {
  const std::string text = sample_text();
  tessera::PrepareOptions o = options_for(fresh_dir("prepare_split"), text);
  o.shard_tokens = 500;
  const auto many = tessera::prepare_data(o);
  EXPECT_EQ(int64_t(many.train_files.size()), (many.train_tokens + 499) / 500);
  EXPECT_EQ(decode_shards(many.train_files) + decode_shards(many.val_files), text);

  // A second run with big shards must not leave train_000001.bin ... behind for a glob.
  o.shard_tokens = 1'000'000;
  o.val_fraction = 0;
  const auto one = tessera::prepare_data(o);
  EXPECT_EQ(one.train_files.size(), 1u);
  EXPECT_TRUE(one.val_files.empty());
  EXPECT_EQ(one.removed_stale.size(), many.train_files.size() - 1 + many.val_files.size());
  EXPECT_EQ(tessera::expand_shard_pattern(o.out_dir + "/*.bin"), one.train_files);
}

TEST(DataPrepare, BadOptionsAreErrors) {
  const std::string dir = fresh_dir("prepare_errors");
  tessera::PrepareOptions o;
  o.out_dir = dir + "/out";
  o.input = dir + "/missing.txt";
  try {
    tessera::prepare_data(o);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(o.input), std::string::npos) << e.what();
  }
  o.input = write_input(dir, "");
  EXPECT_THROW(tessera::prepare_data(o), Error);  // empty input
  o.input = write_input(dir, "abc");
  o.val_fraction = 1.0;
  EXPECT_THROW(tessera::prepare_data(o), Error);
  o.val_fraction = 0.1;  // 3 tokens * 0.1 rounds to an empty validation set
  EXPECT_THROW(tessera::prepare_data(o), Error);
  o.val_fraction = 0;
  o.tokenizer = "words";
  EXPECT_THROW(tessera::prepare_data(o), Error);
  o.tokenizer = "bytes";
  o.encoder = "encoder.json";  // only gpt2 takes files: no silent ignoring
  EXPECT_THROW(tessera::prepare_data(o), Error);
  o.encoder.clear();
  o.tokenizer = "gpt2";  // needs --encoder and --merges
  EXPECT_THROW(tessera::prepare_data(o), Error);
}

TEST(DataPrepare, CommandLine) {
  const std::string dir = fresh_dir("prepare_cli");
  const std::string input = write_input(dir, sample_text());
  using tessera::cli::cmd_data_prepare;
  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_data_prepare({"--help"}), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("usage: tessera data prepare"),
            std::string::npos);

  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_data_prepare({"--input", input, "--out=" + dir + "/o", "--tokenizer", "bytes",
                              "--val-fraction", "0.25"}),
            0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("train_000000.bin"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir + "/o/val_000000.bin"));

  EXPECT_THROW(cmd_data_prepare({"--input", input, "--out", dir, "--colour", "red"}), Error);
  EXPECT_THROW(cmd_data_prepare({"--input", input, "--out"}), Error);
  EXPECT_THROW(cmd_data_prepare({"--input", input}), Error);
  EXPECT_THROW(cmd_data_prepare({"--input", input, "--out", dir, "--val-fraction", "x"}), Error);
  EXPECT_THROW(cmd_data_prepare({"stray", "--input", input, "--out", dir}), Error);
}

TEST(DataSha256, KnownVectors) {
  EXPECT_EQ(tessera::sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(tessera::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(tessera::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  tessera::Sha256 h;  // a million 'a', fed in uneven pieces
  const std::string chunk(997, 'a');
  size_t left = 1'000'000;
  while (left > 0) {
    const size_t take = std::min(left, chunk.size());
    h.update(chunk.data(), take);
    left -= take;
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
