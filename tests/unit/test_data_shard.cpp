// llm.c token shards: round trip, and every damaged-file case fails naming file + fault.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/data/shard.h"
#include "base/error.h"
#include "tests/unit/test_support.h"

namespace fs = std::filesystem;
using tessera::test_support::error_of;
using tessera::test_support::fresh_dir;
using tessera::test_support::write_raw_shard;

TEST(DataShard, RoundTripKeepsEveryTokenValue) {
  std::vector<uint16_t> tokens;
  for (int i = 0; i < 70000; ++i) tokens.push_back(static_cast<uint16_t>(i * 7919));
  tokens.push_back(65535);
  const std::string path = fresh_dir("shard_roundtrip") + "/a.bin";
  tessera::write_shard(path, tokens);
  EXPECT_EQ(tessera::read_shard(path), tokens);
  EXPECT_EQ(tessera::read_shard_header(path), int64_t(tokens.size()));
  EXPECT_EQ(fs::file_size(path), 1024 + 2 * tokens.size());
  EXPECT_FALSE(fs::exists(path + ".tmp"));  // written via a temporary, then renamed
}

TEST(DataShard, HeaderIsLlmcLayout) {
  const std::string path = fresh_dir("shard_layout") + "/a.bin";
  tessera::write_shard(path, std::vector<uint16_t>{1, 2, 258});
  std::ifstream in(path, std::ios::binary);
  std::vector<int32_t> header(256);
  in.read(reinterpret_cast<char*>(header.data()), 1024);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 3);
  for (int i = 3; i < 256; ++i) EXPECT_EQ(header[i], 0);
  unsigned char bytes[6];
  in.read(reinterpret_cast<char*>(bytes), 6);
  EXPECT_EQ(bytes[4], 2);  // 258 little-endian: 02 01
  EXPECT_EQ(bytes[5], 1);
}

TEST(DataShard, EmptyShardIsValid) {
  const std::string path = fresh_dir("shard_empty") + "/e.bin";
  tessera::write_shard(path, std::vector<uint16_t>{});
  EXPECT_TRUE(tessera::read_shard(path).empty());
}

TEST(DataShard, WrongMagicNamesFileAndMagic) {
  const std::string path = fresh_dir("shard_magic") + "/train_000.bin";
  write_raw_shard(path, {1, 2}, /*magic=*/12345);
  const std::string msg = error_of([&] { tessera::read_shard(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad magic 12345 (expected 20240520"), std::string::npos) << msg;
}

TEST(DataShard, WrongVersionNamesFileAndVersion) {
  const std::string path = fresh_dir("shard_version") + "/v.bin";
  write_raw_shard(path, {1, 2}, 20240520, /*version=*/2);
  const std::string msg = error_of([&] { tessera::read_shard_header(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
}

TEST(DataShard, TruncatedTokensNameBothCounts) {
  const std::string path = fresh_dir("shard_trunc") + "/x.bin";
  write_raw_shard(path, std::vector<uint16_t>(812, 5), 20240520, 1, /*count=*/1000);
  const std::string msg = error_of([&] { tessera::read_shard(path); });
  EXPECT_EQ(msg, path + ": truncated: header says 1000 tokens, file holds 812");
}

TEST(DataShard, TruncatedHeader) {
  const std::string path = fresh_dir("shard_trunc_header") + "/short.bin";
  std::ofstream(path) << "not a shard";
  const std::string msg = error_of([&] { tessera::read_shard(path); });
  EXPECT_NE(msg.find(path + ": truncated"), std::string::npos) << msg;
}

TEST(DataShard, ExtraBytesAfterTokens) {
  const std::string path = fresh_dir("shard_extra") + "/x.bin";
  write_raw_shard(path, {1, 2, 3}, 20240520, 1, -1, /*extra=*/std::string(5, '\0'));
  const std::string msg = error_of([&] { tessera::read_shard(path); });
  EXPECT_NE(msg.find(path + ": 5 extra bytes"), std::string::npos) << msg;
}

TEST(DataShard, MissingFileAndDirectory) {
  const std::string dir = fresh_dir("shard_missing");
  std::string msg = error_of([&] { tessera::read_shard(dir + "/nope.bin"); });
  EXPECT_NE(msg.find(dir + "/nope.bin"), std::string::npos) << msg;
  msg = error_of([&] { tessera::read_shard(dir); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
}

TEST(DataShard, TokenRangeCheckNamesIndex) {
  const std::vector<uint16_t> tokens = {1, 2, 255, 300, 999};
  EXPECT_NO_THROW(tessera::check_token_range("x.bin", tokens, 1000));
  const std::string msg = error_of([&] { tessera::check_token_range("data/x.bin", tokens, 256); });
  EXPECT_EQ(msg, "data/x.bin: token 300 at index 3 is >= model.vocab_size 256");
}

TEST(DataShard, PatternExpandsSorted) {
  const std::string dir = fresh_dir("shard_glob");
  for (const char* name : {"train_000002.bin", "train_000000.bin", "train_000001.bin",
                           "val_000000.bin"}) {
    tessera::write_shard(dir + "/" + name, std::vector<uint16_t>{1});
  }
  const auto files = tessera::expand_shard_pattern(dir + "/train_*.bin");
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0], dir + "/train_000000.bin");
  EXPECT_EQ(files[2], dir + "/train_000002.bin");
  EXPECT_EQ(tessera::expand_shard_pattern(dir + "/val_000000.bin").size(), 1u);
}

TEST(DataShard, PatternErrorsSayWhyNothingMatched) {
  const std::string dir = fresh_dir("shard_glob_errors");
  std::string msg = error_of([&] { tessera::expand_shard_pattern(dir + "/foo/*.bin"); });
  EXPECT_EQ(msg, "no token shard matches '" + dir + "/foo/*.bin' (directory " + dir +
                     "/foo does not exist)");
  msg = error_of([&] { tessera::expand_shard_pattern(dir + "/*.bin"); });
  EXPECT_NE(msg.find("exists but holds no matching file"), std::string::npos) << msg;
  msg = error_of([&] { tessera::expand_shard_pattern(dir + "/one.bin"); });
  EXPECT_EQ(msg, dir + "/one.bin: token shard does not exist");
  msg = error_of([&] { tessera::expand_shard_pattern(""); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}
