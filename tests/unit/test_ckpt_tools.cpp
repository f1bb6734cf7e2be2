// `tessera ckpt inspect`, `tessera ckpt verify` and `tessera generate`, through the real
// binary, on a checkpoint of a tiny model that `tessera train` wrote once for the suite:
// what inspect prints, a flipped byte and a missing shard refused with one error line,
// and generate's continuation checked against the trainer's own greedy sample (the model
// in the training process, run by the pipeline engine) rather than against itself.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/e2e/tessera_process.h"

namespace fs = std::filesystem;
using namespace tessera::test_support;  // tests/e2e/tessera_process.h

namespace {

constexpr int kPromptTokens = 16, kSampleTokens = 8;  // the trainer's sample at seq_len 32

class CkptTools : public ::testing::Test {
 protected:
  // One training run for the whole suite: byte shards of a repeated sentence, 150 steps
  // (enough for a greedy continuation that is not one byte repeated),
  // a checkpoint at the end in <dir>/ckpt and a greedy sample of 8 tokens.
  static void SetUpTestSuite() {
    work_ = std::make_unique<ScratchDir>("ckpt_tools");
    train_ = train_sentence_model(work_->dir, kSampleTokens);
    ASSERT_TRUE(train_.exited && train_.exit_code == 0) << train_.describe();
  }
  static void TearDownTestSuite() { work_.reset(); }

  static std::string ckpt() { return work_->dir + "/ckpt"; }
  static std::string step_dir() { return ckpt() + "/step_000150"; }

  // A copy of the checkpoint's step directory that a test may damage.
  std::string copy_of_checkpoint() {
    const fs::path to = fs::path(copy_.dir) / "step_000150";
    fs::copy(step_dir(), to, fs::copy_options::recursive);
    return to.string();
  }

  static std::unique_ptr<ScratchDir> work_;
  static ProcessResult train_;
  ScratchDir copy_{"ckpt_tools_copy"};
};

std::unique_ptr<ScratchDir> CkptTools::work_;
ProcessResult CkptTools::train_;

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST_F(CkptTools, InspectPrintsTheIndexAndVerifies) {
  const ProcessResult r = run_tessera({"ckpt", "inspect", ckpt()});  // through `latest`
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  for (const char* s : {"step_000150", "step 150,", "tokens seen 19200", "data position 600",
                        "\"dp\":1", "rank_00000.h5", "xxh64:", "wte.weight", "[256, 32]",
                        "h.0.attn.qkv.weight", "ln_f.weight", "wte.weight.adam_m",
                        "checksums: all 1 shards verified"})
    EXPECT_TRUE(contains(r.out, s)) << "no '" << s << "'\n" << r.describe();

  const ProcessResult quick = run_tessera({"ckpt", "inspect", step_dir(), "--no-verify"});
  ASSERT_TRUE(quick.exited && quick.exit_code == 0) << quick.describe();
  EXPECT_TRUE(contains(quick.out, "not verified")) << quick.describe();
}

TEST_F(CkptTools, VerifySaysOk) {
  const ProcessResult r = run_tessera({"ckpt", "verify", ckpt()});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_EQ(r.out.rfind("ok: " + step_dir() + ": 1 shards, ", 0), 0u) << r.describe();
  EXPECT_TRUE(contains(r.out, "MiB verified")) << r.describe();
}

TEST_F(CkptTools, FlippedByteIsRefusedByVerifyAndInspect) {
  const std::string dir = copy_of_checkpoint();
  flip_bit_in_dataset(dir + "/rank_00000.h5", "/pieces/0", 5);
  for (const char* sub : {"verify", "inspect"}) {
    const ProcessResult r = run_tessera({"ckpt", sub, dir});
    EXPECT_TRUE(one_error_line(r, {"checksum mismatch", "rank_00000.h5"})) << sub;
  }
  // --no-verify does not read the data.
  const ProcessResult r = run_tessera({"ckpt", "inspect", dir, "--no-verify"});
  EXPECT_TRUE(r.exited && r.exit_code == 0) << r.describe();
}

TEST_F(CkptTools, MissingShardIsNamed) {
  const std::string dir = copy_of_checkpoint();
  fs::remove(dir + "/rank_00000.h5");
  for (const char* sub : {"verify", "inspect"})
    EXPECT_TRUE(one_error_line(run_tessera({"ckpt", sub, dir}), {"rank_00000.h5"})) << sub;
  EXPECT_TRUE(one_error_line(run_tessera({"generate", "--ckpt", dir, "--prompt", "a stitch"}),
                             {"rank_00000.h5"}));
}

TEST_F(CkptTools, BadArgumentsAreOneErrorLine) {
  const std::string missing = copy_.dir + "/no_such_ckpt";
  EXPECT_TRUE(one_error_line(run_tessera({"generate", "--ckpt", missing, "--prompt", "x"}),
                             {"no_such_ckpt"}));
  EXPECT_TRUE(one_error_line(run_tessera({"ckpt", "verify", missing}), {"no_such_ckpt"}));
  EXPECT_TRUE(one_error_line(run_tessera({"ckpt", "check", ckpt()}), {"inspect", "verify"}));
  EXPECT_TRUE(one_error_line(run_tessera({"generate", "--prompt", "x"}), {"--ckpt"}));
  EXPECT_TRUE(one_error_line(
      run_tessera({"generate", "--ckpt", ckpt(), "--prompt", "x", "--tokens", "many"}),
      {"--tokens"}));
}

// The trainer printed "sample (greedy, prompt of 16 tokens):\n" and the decoded prompt and
// continuation (bytes: one token per byte). Generating from the checkpoint with the same
// prompt must give the same continuation.
TEST_F(CkptTools, GreedyGenerateMatchesTheTrainersSample) {
  const std::string marker =
      "sample (greedy, prompt of " + std::to_string(kPromptTokens) + " tokens):\n";
  const size_t at = train_.out.find(marker);
  ASSERT_NE(at, std::string::npos) << train_.describe();
  const std::string sample = train_.out.substr(at + marker.size(), kPromptTokens + kSampleTokens);
  ASSERT_EQ(sample.size(), (size_t)(kPromptTokens + kSampleTokens)) << train_.describe();
  const std::string prompt = sample.substr(0, kPromptTokens);

  const ProcessResult r = run_tessera({"generate", "--ckpt", ckpt(), "--prompt", prompt,
                                       "--tokens", std::to_string(kSampleTokens)});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_EQ(r.out, sample + "\n") << r.describe();
  const ProcessResult again = run_tessera({"generate", "--ckpt", step_dir(), "--prompt", prompt,
                                           "--tokens", std::to_string(kSampleTokens)});
  EXPECT_EQ(again.out, r.out) << again.describe();
}

TEST_F(CkptTools, SampledGenerateIsDeterministicGivenTheSeed) {
  auto generate = [&](const std::string& seed) {
    return run_tessera({"generate", "--ckpt", ckpt(), "--prompt", "a stitch", "--tokens", "8",
                        "--temperature", "1.5", "--seed", seed});
  };
  const ProcessResult a = generate("7"), b = generate("7");
  ASSERT_TRUE(a.exited && a.exit_code == 0) << a.describe();
  EXPECT_EQ(a.out.size(), std::string("a stitch").size() + 8 + 1) << a.describe();
  EXPECT_EQ(a.out.rfind("a stitch", 0), 0u) << a.describe();
  EXPECT_EQ(a.out, b.out);
  // Different seeds: at T = 1.5 the eight draws of a byte model differ somewhere.
  std::vector<std::string> outs;
  for (const char* seed : {"1", "2", "3"}) outs.push_back(generate(seed).out);
  EXPECT_FALSE(outs[0] == outs[1] && outs[1] == outs[2] && outs[0] == a.out);
}

}  // namespace
