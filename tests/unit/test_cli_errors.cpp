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

#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "tests/e2e/tessera_process.h"

namespace fs = std::filesystem;
using namespace tessera::test_support;  // tests/e2e/tessera_process.h

namespace {

const char* const kForbidden[] = {"terminate", "Aborted",     "abort",         "core dumped",
                                  "MPI_ABORT", "backtrace",   "Segmentation",  "internal error",
                                  "what():",   "Stack trace", "signal"};

// The clean-error contract: no timeout, exit code 2 (not a signal) with exactly one
// non-empty stderr line "tessera: error: ..." that contains every string of `needles`
// (one_error_line), and nothing that looks like a crash on either stream.
::testing::AssertionResult clean_error(const ProcessResult& r,
                                       const std::vector<std::string>& needles) {
  if (r.timed_out) return ::testing::AssertionFailure() << "timed out\n" << r.describe();
  if (auto one_line = one_error_line(r, needles); !one_line) return one_line;
  for (const char* bad : kForbidden)
    if (r.err.find(bad) != std::string::npos || r.out.find(bad) != std::string::npos)
      return ::testing::AssertionFailure() << "output contains '" << bad << "'\n"
                                           << r.describe();
  return ::testing::AssertionSuccess();
}

// A directory with a valid tiny recipe (`recipe.yaml`) whose data.train is
// `<dir>/data/train_*.bin`; the test puts (bad) shards there.
struct Workspace : ScratchDir {
  const std::string recipe = dir + "/recipe.yaml", data = dir + "/data", log_dir = dir + "/runs";

  explicit Workspace(const std::string& name) : ScratchDir("cli_" + name) {
    fs::create_directories(data);
    write_text(recipe, tiny_model_yaml() +
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
                           "  dir: " + log_dir + "\n");
  }

  // The first file data.train matches, where most data tests put their bad shard.
  std::string shard() const { return data + "/train_000000.bin"; }

  // `tessera train recipe.yaml --set ...`
  ProcessResult train(const std::vector<std::string>& sets = {}) const {
    return run_tessera(train_args(recipe, sets), dir);
  }

  // Bad data must be refused before any step runs: no metric line may exist.
  void expect_no_steps() const {
    const std::string log = only_run_log(log_dir);
    if (log.empty()) return;
    for (const auto& e : read_run_log(log))
      EXPECT_NE(e.value("event", ""), "metric") << "a step ran before the data was checked";
  }
};

// --help: usage on stdout, exit code 0 and nothing on stderr.
void expect_usage_on_stdout(const std::vector<std::string>& args) {
  const ProcessResult r = run_tessera(args);
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("usage: tessera"), std::string::npos) << r.describe();
  EXPECT_EQ(r.err, "") << r.describe();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The command line itself

TEST(CliErrors, HelpExitsZeroWithUsageOnStdout) {
  for (const std::string flag : {"--help", "-h", "help"}) expect_usage_on_stdout({flag});
}

TEST(CliErrors, SubcommandHelpExitsZero) {
  expect_usage_on_stdout({"train", "--help"});
  expect_usage_on_stdout({"data", "prepare", "--help"});
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

TEST(CliErrors, SetWithoutArgument) {
  const Workspace w("set_no_argument");
  EXPECT_TRUE(clean_error(run_tessera({"train", w.recipe, "--set"}),
                          {"--set needs a section.key=value"}));
}

TEST(CliErrors, DataPrepareMissingInput) {
  const ScratchDir scratch("cli_prepare_missing");
  const std::string& dir = scratch.dir;
  EXPECT_TRUE(clean_error(
      run_tessera({"data", "prepare", "--input", dir + "/nope.txt", "--out", dir + "/out"}),
      {dir + "/nope.txt", "does not exist"}));
}

TEST(CliErrors, DataPrepareUnknownOption) {
  EXPECT_TRUE(clean_error(run_tessera({"data", "prepare", "--inptu", "x"}),
                          {"unknown option --inptu"}));
}

// ---------------------------------------------------------------------------------------
// Values the workspace's valid recipe is given with --set: the message names the recipe.

struct SetFault {
  std::string name;                  // the test case
  std::vector<std::string> sets;     // each one a --set
  std::vector<std::string> needles;  // what the message says besides the recipe's path
};
void PrintTo(const SetFault& fault, std::ostream* os) { *os << fault.name; }

const SetFault kSetFaults[] = {
    {"SetWithoutEquals", {"train.steps"}, {"--set 'train.steps'", "missing '='"}},
    {"SetUnknownKey", {"train.stepz=3"},
     {"--set", "unknown key 'train.stepz'", "did you mean 'steps'"}},
    {"SetUnknownSection", {"trian.steps=3"}, {"unknown section 'trian'"}},
    {"SetWrongType", {"train.steps=many"}, {"train.steps", "expected an integer", "'many'"}},
    {"SetOutOfRange", {"model.vocab_size=70000"},
     {"model.vocab_size", "expected an integer from 1 to 65536"}},
    {"CrossFieldConstraint", {"model.n_embd=30", "model.n_head=4"},
     {"model.n_embd 30 is not divisible by model.n_head 4"}},
    {"WarmupLongerThanTraining", {"optim.warmup_steps=5"},
     {"optim.warmup_steps 5 is larger than train.steps 1"}},
    {"EmptyDataTrain", {"data.train="}, {"data.train is empty"}},
    {"LoraWithoutBase", {"lora.rank=4"}, {"lora.base", "is empty"}},
    {"StageLayersMalformed", {"parallel.stage_layers=two"}, {"parallel.stage_layers", "'two'"}},
};

class CliSetFault : public ::testing::TestWithParam<SetFault> {};

TEST_P(CliSetFault, OneLineNamingTheRecipe) {
  const SetFault& fault = GetParam();
  const Workspace w(fault.name);
  std::vector<std::string> needles = {w.recipe};
  needles.insert(needles.end(), fault.needles.begin(), fault.needles.end());
  EXPECT_TRUE(clean_error(w.train(fault.sets), needles));
}

// train.device: cuda on this machine (no GPU, or a build without CUDA): one line saying
// which, before any step.
TEST(CliErrors, CudaDeviceRefusedBeforeAnyWork) {
  const Workspace w("cuda_device");
  EXPECT_TRUE(clean_error(w.train({"train.device=cuda"}), {"train.device: cuda"}));
  w.expect_no_steps();
}

// GPUs run data parallel only: a tensor-parallel layout on them is refused, naming it.
TEST(CliErrors, CudaDeviceWithMpiBackendRefused) {
  const Workspace w("cuda_layout");
  EXPECT_TRUE(clean_error(w.train({"train.device=cuda", "parallel.tp=2", "parallel.backend=mpi"}),
                          {"parallel.backend: mpi", "GPU memory", "tp=2"}));
  w.expect_no_steps();
}

INSTANTIATE_TEST_SUITE_P(CliErrors, CliSetFault, ::testing::ValuesIn(kSetFaults),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// The recipe file

TEST(CliErrors, MissingRecipe) {
  const ScratchDir scratch("cli_missing_recipe");
  const std::string path = scratch.dir + "/no_such_recipe.yaml";
  EXPECT_TRUE(clean_error(run_tessera({"train", path}),
                          {path, "cannot open recipe file", "No such file"}));
}

TEST(CliErrors, RecipeIsADirectory) {
  const ScratchDir scratch("cli_recipe_dir");
  EXPECT_TRUE(clean_error(run_tessera({"train", scratch.dir}),
                          {scratch.dir, "cannot read recipe file"}));
}

TEST(CliErrors, BinaryFileAsRecipe) {
  const Workspace w("binary_recipe");
  write_raw_shard(w.shard(), pattern_tokens(100));
  EXPECT_TRUE(clean_error(run_tessera({"train", w.shard()}), {w.shard()}));
}

// A fault inside the recipe file: the message names the file and where in it the fault is.
struct RecipeFileFault {
  std::string name;                  // the test case
  std::string yaml;                  // the recipe file's text
  std::string at;                    // what follows the path in the message: ":line:col:"
  std::vector<std::string> needles;  // what else the message says
};
void PrintTo(const RecipeFileFault& fault, std::ostream* os) { *os << fault.name; }

const RecipeFileFault kRecipeFileFaults[] = {
    {"MalformedYaml", "model:\n  n_layer: [1, 2\n", ":", {"malformed YAML"}},
    {"MalformedYamlTab", "model:\n  n_layer: 1\n\tn_head: 2\n", ":3:", {"malformed YAML"}},
    {"TopLevelNotAMapping", "- model\n- train\n", ":1:1:", {"expected a mapping of sections"}},
    {"UnknownKey", "train:\n  stepz: 3\n", ":2:3:",
     {"unknown key 'train.stepz'", "did you mean 'steps'"}},
    {"UnknownSection", "trian:\n  steps: 3\n", ":1:1:",
     {"unknown section 'trian'", "did you mean 'train'"}},
    {"DuplicateKey", "model:\n  n_layer: 1\n  n_layer: 2\n", ":3:3:",
     {"duplicate key 'model.n_layer'"}},
    {"WrongTypeInteger", "train:\n  steps: many\n", ":2:10:",
     {"train.steps", "expected an integer", "'many'"}},
    {"WrongTypeNumber", "optim:\n  lr: fast\n", ":2:7:",
     {"optim.lr", "expected a number", "'fast'"}},
    {"WrongTypeBoolean", "log:\n  tensorboard: maybe\n", ":2:16:",
     {"log.tensorboard", "true or false"}},
    {"WrongTypeListForScalar", "model:\n  n_layer: [1, 2]\n", ":2:12:",
     {"model.n_layer", "expected an integer", "a list"}},
    {"WrongChoice", "train:\n  precision: fp33\n", ":2:14:",
     {"train.precision", "one of", "did you mean"}},
    {"IntegerTooLarge", "model:\n  n_layer: 99999999999999999999999\n", ":2:12:",
     {"model.n_layer", "does not fit"}},
    // A YAML block scalar holds newlines; its text must not break the one-line message.
    {"MultiLineValueStaysOneLine", "train:\n  steps: |\n    1\n    2\n", ":2:", {"train.steps"}},
    {"MultiLineTopLevelScalarStaysOneLine", "|\n  model\n  train\n", ":1:1:",
     {"expected a mapping"}},
};

class CliRecipeFileFault : public ::testing::TestWithParam<RecipeFileFault> {};

TEST_P(CliRecipeFileFault, OneLineNamingFileAndPosition) {
  const RecipeFileFault& fault = GetParam();
  const ScratchDir scratch("cli_" + fault.name);
  const std::string path = scratch.dir + "/recipe.yaml";
  write_text(path, fault.yaml);
  std::vector<std::string> needles = {path + fault.at};
  needles.insert(needles.end(), fault.needles.begin(), fault.needles.end());
  EXPECT_TRUE(clean_error(run_tessera({"train", path}), needles));
}

INSTANTIATE_TEST_SUITE_P(CliErrors, CliRecipeFileFault, ::testing::ValuesIn(kRecipeFileFaults),
                         [](const auto& info) { return info.param.name; });

// One process asked for two data-parallel ranks: a clean message, not an MPI abort.
TEST(CliErrors, LayoutDoesNotMatchWorldSize) {
  const Workspace w("layout");
  write_raw_shard(w.shard(), pattern_tokens(1000));
  std::vector<std::string> needles = {"parallel layout dp=2 x tp=1 x pp=1 = 2 ranks",
                                      "but the job has 1 MPI rank"};
  // Outside a Slurm job it says how to start the job with mpirun.
  if (std::getenv("SLURM_JOB_ID") == nullptr) needles.push_back("(start it with mpirun -n 2 or");
  EXPECT_TRUE(clean_error(w.train({"parallel.dp=2", "train.global_batch=4"}), needles));
}

// In a Slurm job (SLURM_JOB_ID set) the same mismatch suggests srun and sbatch, not mpirun.
TEST(CliErrors, LayoutDoesNotMatchWorldSizeUnderSlurm) {
  const Workspace w("layout_slurm");
  write_raw_shard(w.shard(), pattern_tokens(1000));
  std::vector<std::string> argv = {TESSERA_BINARY};
  for (const std::string& a : train_args(w.recipe, {"parallel.dp=2", "train.global_batch=4"}))
    argv.push_back(a);
  const ProcessResult r = run_process(argv, w.dir, 60, {"SLURM_JOB_ID=4242"});
  EXPECT_TRUE(clean_error(r, {"= 2 ranks, but the job has 1 MPI rank",
                              "(start it with srun -n 2 or sbatch --ntasks=2, or change "
                              "parallel.dp/tp/pp)"}));
  EXPECT_EQ(r.err.find("mpirun"), std::string::npos) << r.describe();
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
  EXPECT_TRUE(clean_error(w.train({"data.train=" + w.shard()}), {w.shard(), "does not exist"}));
}

TEST(CliErrors, DataDirectoryWithoutShards) {
  const Workspace w("no_shards");
  EXPECT_TRUE(clean_error(w.train(), {w.data, "holds no matching file"}));
}

TEST(CliErrors, ShardIsADirectory) {
  const Workspace w("shard_is_dir");
  fs::create_directories(w.shard());
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "not a regular file"}));
}

TEST(CliErrors, ShardWithWrongMagic) {
  const Workspace w("bad_magic");
  write_raw_shard(w.shard(), pattern_tokens(1000), /*magic=*/20240521);
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "bad magic 20240521", "expected 20240520"}));
  w.expect_no_steps();
}

TEST(CliErrors, ShardWithWrongVersion) {
  const Workspace w("bad_version");
  write_raw_shard(w.shard(), pattern_tokens(1000), 20240520, /*version=*/2);
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "unsupported shard version 2"}));
}

TEST(CliErrors, TruncatedShard) {
  const Workspace w("truncated");
  write_raw_shard(w.shard(), pattern_tokens(1000), 20240520, 1, /*count=*/1500);
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "truncated", "1500", "1000"}));
  w.expect_no_steps();
}

TEST(CliErrors, TruncatedShardHeader) {
  const Workspace w("truncated_header");
  write_text(w.shard(), std::string(100, '\0'));
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "truncated", "100 bytes"}));
}

TEST(CliErrors, EmptyShardFile) {
  const Workspace w("empty_shard");
  write_text(w.shard(), "");
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "truncated"}));
}

TEST(CliErrors, ShardWithExtraBytes) {
  const Workspace w("extra_bytes");
  write_raw_shard(w.shard(), pattern_tokens(1000), 20240520, 1, -1, "xyz");
  EXPECT_TRUE(clean_error(w.train(), {w.shard(), "3 extra bytes"}));
}

TEST(CliErrors, TokenIdAtLeastVocabSize) {
  const Workspace w("token_range");
  const std::string bad = w.data + "/train_000001.bin";
  write_raw_shard(w.shard(), pattern_tokens(1000));
  std::vector<uint16_t> tokens = pattern_tokens(1000);
  tokens[17] = 256;  // == vocab_size: the first id out of range
  write_raw_shard(bad, tokens);
  EXPECT_TRUE(clean_error(w.train(),
                          {bad, "token 256 at index 17", ">= model.vocab_size 256"}));
  w.expect_no_steps();
}

TEST(CliErrors, TokenIdAboveSmallerVocab) {
  const Workspace w("token_range_vocab");
  write_raw_shard(w.shard(), pattern_tokens(1000, 200));  // ids up to 199
  EXPECT_TRUE(clean_error(w.train({"model.vocab_size=100"}),
                          {w.shard(), ">= model.vocab_size 100"}));
}

TEST(CliErrors, TooFewTokensForOneSample) {
  const Workspace w("too_few");
  write_raw_shard(w.shard(), pattern_tokens(20));  // seq_len 32 needs 33
  EXPECT_TRUE(clean_error(w.train(), {w.data, "too few for one sample", "model.seq_len 32"}));
}

TEST(CliErrors, UnwritableLogDirectory) {
  const Workspace w("log_dir");
  write_raw_shard(w.shard(), pattern_tokens(1000));
  write_text(w.dir + "/a_file", "");
  EXPECT_TRUE(clean_error(w.train({"log.dir=" + w.dir + "/a_file/runs"}),
                          {w.dir + "/a_file/runs", "cannot create run log directory"}));
}
