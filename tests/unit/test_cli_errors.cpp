// Bad input to the real `tessera` binary: every fault gives exactly one line
// "tessera: error: <file>: <fault>" on stderr and exit code 2, never an abort, a
// signal, a stack dump or a second line.
//
// Acceptance item: a missing recipe, malformed YAML, an unknown key, a wrong type, a
// missing data directory, a shard with a wrong magic, a truncated shard and a token id
// >= vocab size each have a test below; so do the command line's own errors and a few
// neighbours of each case. Each test runs the binary as a child process (about half a
// second each, mostly MPI start-up).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/e2e/tessera_process.h"

namespace fs = std::filesystem;
using tessera::test_support::fresh_dir;
using tessera::test_support::only_run_log;
using tessera::test_support::pattern_tokens;
using tessera::test_support::ProcessResult;
using tessera::test_support::read_run_log;
using tessera::test_support::run_tessera;
using tessera::test_support::write_raw_shard;
using tessera::test_support::write_text;

namespace {

const char* const kForbidden[] = {"terminate", "Aborted",     "abort",         "core dumped",
                                  "MPI_ABORT", "backtrace",   "Segmentation",  "internal error",
                                  "what():",   "Stack trace", "signal"};

// The clean-error contract: exit code 2 (not a signal), exactly one non-empty stderr line
// starting "tessera: error: " that contains every string of `needles`, and nothing that
// looks like a crash on either stream.
::testing::AssertionResult clean_error(const ProcessResult& r,
                                       const std::vector<std::string>& needles) {
  if (r.timed_out) return ::testing::AssertionFailure() << "timed out\n" << r.describe();
  if (!r.exited)
    return ::testing::AssertionFailure() << "did not exit normally\n" << r.describe();
  if (r.exit_code != 2)
    return ::testing::AssertionFailure() << "exit code " << r.exit_code << ", expected 2\n"
                                         << r.describe();
  const auto lines = r.err_lines();
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << lines.size()
                                         << " non-empty stderr lines, expected exactly 1\n"
                                         << r.describe();
  const std::string& line = lines[0];
  if (line.rfind("tessera: error: ", 0) != 0)
    return ::testing::AssertionFailure() << "stderr does not start with 'tessera: error: '\n"
                                         << r.describe();
  for (const auto& needle : needles)
    if (line.find(needle) == std::string::npos)
      return ::testing::AssertionFailure() << "the message does not contain '" << needle
                                           << "'\n" << r.describe();
  for (const char* bad : kForbidden)
    if (r.err.find(bad) != std::string::npos || r.out.find(bad) != std::string::npos)
      return ::testing::AssertionFailure() << "output contains '" << bad << "'\n"
                                           << r.describe();
  return ::testing::AssertionSuccess();
}

// A directory with a valid tiny recipe (`recipe.yaml`) whose data.train is
// `<dir>/data/train_*.bin`; the test puts (bad) shards there.
struct Workspace {
  std::string dir, recipe, data, log_dir;

  // The files stay behind when the test failed, for a look at what went wrong.
  ~Workspace() {
    std::error_code ec;
    if (!::testing::Test::HasFailure()) fs::remove_all(dir, ec);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  explicit Workspace(const std::string& name, const std::string& extra_yaml = "") {
    dir = fresh_dir("cli_" + name);
    data = dir + "/data";
    log_dir = dir + "/runs";
    fs::create_directories(data);
    recipe = dir + "/recipe.yaml";
    write_text(recipe, "model:\n"
                       "  n_layer: 1\n"
                       "  n_head: 2\n"
                       "  n_embd: 32\n"
                       "  vocab_size: 256\n"
                       "  seq_len: 32\n"
                       "data:\n"
                       "  train: " + data + "/train_*.bin\n"
                       "train:\n"
                       "  steps: 1\n"
                       "  global_batch: 2\n"
                       "  micro_batch: 2\n"
                       "  sample_tokens: 0\n"
                       "optim:\n"
                       "  warmup_steps: 0\n"
                       "checkpoint:\n"
                       "  dir: " + dir + "/ckpt\n"
                       "log:\n"
                       "  dir: " + log_dir + "\n" + extra_yaml);
  }

  // `tessera train recipe.yaml --set ...`
  ProcessResult train(const std::vector<std::string>& sets = {}) const {
    std::vector<std::string> args = {"train", recipe};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    return run_tessera(args, dir);
  }

  // Bad data must be refused before any step runs: no metric line may exist.
  void expect_no_steps() const {
    const std::string log = only_run_log(log_dir);
    if (log.empty()) return;
    for (const auto& e : read_run_log(log))
      EXPECT_NE(e.value("event", ""), "metric") << "a step ran before the data was checked";
  }
};

std::string write_recipe(const std::string& name, const std::string& text) {
  const std::string path = fresh_dir("cli_" + name) + "/recipe.yaml";
  write_text(path, text);
  return path;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The command line itself

TEST(CliErrors, HelpExitsZeroWithUsageOnStdout) {
  for (const std::string flag : {"--help", "-h", "help"}) {
    const ProcessResult r = run_tessera({flag});
    ASSERT_TRUE(r.exited) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_NE(r.out.find("usage: tessera"), std::string::npos) << r.describe();
    EXPECT_EQ(r.err, "") << r.describe();
  }
}

TEST(CliErrors, SubcommandHelpExitsZero) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"train", "--help"}, {"data", "prepare", "--help"}}) {
    const ProcessResult r = run_tessera(args);
    ASSERT_TRUE(r.exited) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_NE(r.out.find("usage: tessera"), std::string::npos) << r.describe();
    EXPECT_EQ(r.err, "") << r.describe();
  }
}

TEST(CliErrors, NoArgumentsPrintsUsageAndExits2) {
  const ProcessResult r = run_tessera({});
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("usage: tessera"), std::string::npos) << r.describe();
}

TEST(CliErrors, UnknownCommand) {
  EXPECT_TRUE(clean_error(run_tessera({"trian", "x.yaml"}), {"unknown command 'trian'"}));
}

TEST(CliErrors, UnknownDataSubcommand) {
  EXPECT_TRUE(clean_error(run_tessera({"data", "frobnicate"}), {"prepare"}));
}

TEST(CliErrors, UnknownOption) {
  const Workspace w("unknown_option");
  EXPECT_TRUE(clean_error(run_tessera({"train", w.recipe, "--sett", "train.steps=2"}),
                          {"unknown option '--sett'"}));
}

TEST(CliErrors, NoRecipeGiven) {
  EXPECT_TRUE(clean_error(run_tessera({"train"}), {"no recipe given"}));
}

TEST(CliErrors, TwoRecipesGiven) {
  EXPECT_TRUE(clean_error(run_tessera({"train", "a.yaml", "b.yaml"}),
                          {"more than one recipe", "a.yaml", "b.yaml"}));
}

TEST(CliErrors, SetWithoutEquals) {
  const Workspace w("set_no_equals");
  EXPECT_TRUE(clean_error(w.train({"train.steps"}),
                          {w.recipe, "--set 'train.steps'", "missing '='"}));
}

TEST(CliErrors, SetWithoutArgument) {
  const Workspace w("set_no_argument");
  EXPECT_TRUE(clean_error(run_tessera({"train", w.recipe, "--set"}),
                          {"--set needs a section.key=value"}));
}

TEST(CliErrors, SetUnknownKey) {
  const Workspace w("set_unknown_key");
  EXPECT_TRUE(clean_error(w.train({"train.stepz=3"}),
                          {w.recipe, "--set", "unknown key 'train.stepz'", "did you mean 'steps'"}));
}

TEST(CliErrors, SetUnknownSection) {
  const Workspace w("set_unknown_section");
  EXPECT_TRUE(clean_error(w.train({"trian.steps=3"}), {w.recipe, "unknown section 'trian'"}));
}

TEST(CliErrors, SetWrongType) {
  const Workspace w("set_wrong_type");
  EXPECT_TRUE(clean_error(w.train({"train.steps=many"}),
                          {w.recipe, "train.steps", "expected an integer", "'many'"}));
}

TEST(CliErrors, SetOutOfRange) {
  const Workspace w("set_out_of_range");
  EXPECT_TRUE(clean_error(w.train({"model.vocab_size=70000"}),
                          {w.recipe, "model.vocab_size", "expected an integer from 1 to 65536"}));
}

TEST(CliErrors, DataPrepareMissingInput) {
  const std::string dir = fresh_dir("cli_prepare_missing");
  EXPECT_TRUE(clean_error(
      run_tessera({"data", "prepare", "--input", dir + "/nope.txt", "--out", dir + "/out"}),
      {dir + "/nope.txt", "does not exist"}));
}

TEST(CliErrors, DataPrepareUnknownOption) {
  EXPECT_TRUE(clean_error(run_tessera({"data", "prepare", "--inptu", "x"}),
                          {"unknown option --inptu"}));
}

// ---------------------------------------------------------------------------------------
// The recipe file

TEST(CliErrors, MissingRecipe) {
  const std::string path = fresh_dir("cli_missing_recipe") + "/no_such_recipe.yaml";
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path, "cannot open recipe file", "No such file"}));
}

TEST(CliErrors, RecipeIsADirectory) {
  const std::string dir = fresh_dir("cli_recipe_dir");
  EXPECT_TRUE(clean_error(run_tessera({"train", dir}), {dir, "cannot read recipe file"}));
}

TEST(CliErrors, MalformedYaml) {
  const std::string path = write_recipe("malformed", "model:\n  n_layer: [1, 2\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}), {path + ":", "malformed YAML"}));
}

TEST(CliErrors, MalformedYamlTab) {
  const std::string path = write_recipe("malformed_tab", "model:\n  n_layer: 1\n\tn_head: 2\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}), {path + ":3:", "malformed YAML"}));
}

TEST(CliErrors, BinaryFileAsRecipe) {
  const Workspace w("binary_recipe");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(100));
  const ProcessResult r = run_tessera({"train", shard});
  EXPECT_TRUE(clean_error(r, {shard}));
}

TEST(CliErrors, TopLevelNotAMapping) {
  const std::string path = write_recipe("top_list", "- model\n- train\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":1:1:", "expected a mapping of sections"}));
}

TEST(CliErrors, UnknownKey) {
  const std::string path = write_recipe("unknown_key", "train:\n  stepz: 3\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:3:", "unknown key 'train.stepz'", "did you mean 'steps'"}));
}

TEST(CliErrors, UnknownSection) {
  const std::string path = write_recipe("unknown_section", "trian:\n  steps: 3\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":1:1:", "unknown section 'trian'", "did you mean 'train'"}));
}

TEST(CliErrors, DuplicateKey) {
  const std::string path = write_recipe("duplicate", "model:\n  n_layer: 1\n  n_layer: 2\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":3:3:", "duplicate key 'model.n_layer'"}));
}

TEST(CliErrors, WrongTypeInteger) {
  const std::string path = write_recipe("wrong_type", "train:\n  steps: many\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:10:", "train.steps", "expected an integer", "'many'"}));
}

TEST(CliErrors, WrongTypeNumber) {
  const std::string path = write_recipe("wrong_type_number", "optim:\n  lr: fast\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:7:", "optim.lr", "expected a number", "'fast'"}));
}

TEST(CliErrors, WrongTypeBoolean) {
  const std::string path = write_recipe("wrong_type_bool", "log:\n  tensorboard: maybe\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:16:", "log.tensorboard", "true or false"}));
}

TEST(CliErrors, WrongTypeListForScalar) {
  const std::string path = write_recipe("wrong_type_list", "model:\n  n_layer: [1, 2]\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:12:", "model.n_layer", "expected an integer", "a list"}));
}

TEST(CliErrors, WrongChoice) {
  const std::string path = write_recipe("wrong_choice", "train:\n  precision: fp33\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:14:", "train.precision", "one of", "did you mean"}));
}

TEST(CliErrors, IntegerTooLarge) {
  const std::string path =
      write_recipe("too_large", "model:\n  n_layer: 99999999999999999999999\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path + ":2:12:", "model.n_layer", "does not fit"}));
}

// A YAML block scalar holds newlines; its text must not break the one-line message.
TEST(CliErrors, MultiLineValueStaysOneLine) {
  const std::string path = write_recipe("multiline_value", "train:\n  steps: |\n    1\n    2\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}), {path + ":2:", "train.steps"}));
}

TEST(CliErrors, MultiLineTopLevelScalarStaysOneLine) {
  const std::string path = write_recipe("multiline_top", "|\n  model\n  train\n");
  EXPECT_TRUE(clean_error(run_tessera({"train", path}), {path + ":1:1:", "expected a mapping"}));
}

TEST(CliErrors, CrossFieldConstraint) {
  const Workspace w("cross_field");
  EXPECT_TRUE(clean_error(w.train({"model.n_embd=30", "model.n_head=4"}),
                          {w.recipe, "model.n_embd 30 is not divisible by model.n_head 4"}));
}

TEST(CliErrors, WarmupLongerThanTraining) {
  const Workspace w("warmup");
  EXPECT_TRUE(clean_error(w.train({"optim.warmup_steps=5"}),
                          {w.recipe, "optim.warmup_steps 5 is larger than train.steps 1"}));
}

TEST(CliErrors, EmptyDataTrain) {
  const Workspace w("empty_train");
  EXPECT_TRUE(clean_error(w.train({"data.train="}), {w.recipe, "data.train is empty"}));
}

TEST(CliErrors, NotImplementedYet) {
  const Workspace w("not_implemented");
  EXPECT_TRUE(clean_error(w.train({"parallel.tp=2"}), {w.recipe, "parallel.tp", "not implemented"}));
}

// One process asked for two data-parallel ranks: a clean message, not an MPI abort.
TEST(CliErrors, LayoutDoesNotMatchWorldSize) {
  const Workspace w("layout");
  write_raw_shard(w.data + "/train_000000.bin", pattern_tokens(1000));
  EXPECT_TRUE(clean_error(w.train({"parallel.dp=2", "train.global_batch=4"}),
                          {"parallel layout", "does not match the 1 MPI ranks"}));
}

// ---------------------------------------------------------------------------------------
// The data

TEST(CliErrors, MissingDataDirectory) {
  const Workspace w("missing_data_dir");
  const std::string missing = w.dir + "/no_such_dir";
  EXPECT_TRUE(clean_error(w.train({"data.train=" + missing + "/train_*.bin"}),
                          {missing, "does not exist"}));
  w.expect_no_steps();
}

TEST(CliErrors, MissingShardFile) {
  const Workspace w("missing_shard");
  const std::string missing = w.data + "/train_000000.bin";
  EXPECT_TRUE(clean_error(w.train({"data.train=" + missing}), {missing, "does not exist"}));
}

TEST(CliErrors, DataDirectoryWithoutShards) {
  const Workspace w("no_shards");
  EXPECT_TRUE(clean_error(w.train(), {w.data, "holds no matching file"}));
}

TEST(CliErrors, ShardIsADirectory) {
  const Workspace w("shard_is_dir");
  fs::create_directories(w.data + "/train_000000.bin");
  EXPECT_TRUE(clean_error(w.train(), {w.data + "/train_000000.bin", "not a regular file"}));
}

TEST(CliErrors, ShardWithWrongMagic) {
  const Workspace w("bad_magic");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(1000), /*magic=*/20240521);
  EXPECT_TRUE(clean_error(w.train(), {shard, "bad magic 20240521", "expected 20240520"}));
  w.expect_no_steps();
}

TEST(CliErrors, ShardWithWrongVersion) {
  const Workspace w("bad_version");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(1000), 20240520, /*version=*/2);
  EXPECT_TRUE(clean_error(w.train(), {shard, "unsupported shard version 2"}));
}

TEST(CliErrors, TruncatedShard) {
  const Workspace w("truncated");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(1000), 20240520, 1, /*count=*/1500);
  EXPECT_TRUE(clean_error(w.train(), {shard, "truncated", "1500", "1000"}));
  w.expect_no_steps();
}

TEST(CliErrors, TruncatedShardHeader) {
  const Workspace w("truncated_header");
  const std::string shard = w.data + "/train_000000.bin";
  write_text(shard, std::string(100, '\0'));
  EXPECT_TRUE(clean_error(w.train(), {shard, "truncated", "100 bytes"}));
}

TEST(CliErrors, EmptyShardFile) {
  const Workspace w("empty_shard");
  const std::string shard = w.data + "/train_000000.bin";
  write_text(shard, "");
  EXPECT_TRUE(clean_error(w.train(), {shard, "truncated"}));
}

TEST(CliErrors, ShardWithExtraBytes) {
  const Workspace w("extra_bytes");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(1000), 20240520, 1, -1, "xyz");
  EXPECT_TRUE(clean_error(w.train(), {shard, "3 extra bytes"}));
}

TEST(CliErrors, TokenIdAtLeastVocabSize) {
  const Workspace w("token_range");
  const std::string good = w.data + "/train_000000.bin", bad = w.data + "/train_000001.bin";
  write_raw_shard(good, pattern_tokens(1000));
  std::vector<uint16_t> tokens = pattern_tokens(1000);
  tokens[17] = 256;  // == vocab_size: the first id out of range
  write_raw_shard(bad, tokens);
  EXPECT_TRUE(clean_error(w.train(),
                          {bad, "token 256 at index 17", ">= model.vocab_size 256"}));
  w.expect_no_steps();
}

TEST(CliErrors, TokenIdAboveSmallerVocab) {
  const Workspace w("token_range_vocab");
  const std::string shard = w.data + "/train_000000.bin";
  write_raw_shard(shard, pattern_tokens(1000, 200));  // ids up to 199
  EXPECT_TRUE(clean_error(w.train({"model.vocab_size=100"}),
                          {shard, ">= model.vocab_size 100"}));
}

TEST(CliErrors, TooFewTokensForOneSample) {
  const Workspace w("too_few");
  write_raw_shard(w.data + "/train_000000.bin", pattern_tokens(20));  // seq_len 32 needs 33
  EXPECT_TRUE(clean_error(w.train(), {w.data, "too few for one sample", "model.seq_len 32"}));
}

TEST(CliErrors, UnwritableLogDirectory) {
  const Workspace w("log_dir");
  write_raw_shard(w.data + "/train_000000.bin", pattern_tokens(1000));
  write_text(w.dir + "/a_file", "");
  EXPECT_TRUE(clean_error(w.train({"log.dir=" + w.dir + "/a_file/runs"}),
                          {w.dir + "/a_file/runs", "cannot create run log directory"}));
}
