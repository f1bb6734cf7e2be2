// The trainer, through the real `tessera train` binary (tessera::train() needs MPI, and
// unit_tests has no MPI_Init): determinism, learning, the run log it writes, and how a
// run that fails after it started is recorded.
//
// Every run is a 1-layer, 32-wide model on 32-token windows of a short repeated text,
// tokenized by `tessera data prepare --tokenizer bytes`; each takes about a second.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/data/sha256.h"
#include "framework/recipe/recipe.h"
#include "tests/e2e/tessera_process.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace tessera::test_support;  // tests/e2e/tessera_process.h

namespace {

const double kLnVocab = std::log(256.0);  // the loss of a uniform guess over bytes

// A work directory with byte-level shards of a learnable text (data/train_000000.bin,
// data/val_000000.bin) and a recipe for a tiny model on them.
struct Workdir : ScratchDir {
  const std::string data = dir + "/data", recipe = dir + "/recipe.yaml";

  explicit Workdir(const std::string& name) : ScratchDir("trainer_" + name) {
    std::string text;
    for (int i = 0; i < 300; ++i) text += "the quick brown fox jumps over the lazy dog. ";
    write_text(dir + "/corpus.txt", text);
    const ProcessResult p = run_tessera({"data", "prepare", "--input", dir + "/corpus.txt",
                                         "--out", data, "--tokenizer", "bytes",
                                         "--val-fraction", "0.1"});
    EXPECT_TRUE(p.exited && p.exit_code == 0) << p.describe();
    write_text(recipe, tiny_model_yaml() +
                           "data:\n"
                           "  train: " + data + "/train_*.bin\n"
                           "  val: " + data + "/val_*.bin\n"
                           "train:\n"
                           "  steps: 8\n"
                           "  global_batch: 4\n"
                           "  micro_batch: 2\n"
                           "  seed: 1337\n"
                           "  eval_every: 0\n"
                           "  eval_batches: 2\n"
                           "  sample_tokens: 0\n"
                           "optim:\n"
                           "  lr: 1.0e-2\n"
                           "  min_lr: 1.0e-3\n"
                           "  warmup_steps: 0\n"
                           "log:\n"
                           "  every: 1\n");
  }

  std::string train_shard() const { return data + "/train_000000.bin"; }
  std::string val_shard() const { return data + "/val_000000.bin"; }

  // One run, logging to <dir>/<log_name>; returns the process result. `*args_out`, if
  // given, receives the arguments after `tessera`.
  ProcessResult train(const std::string& log_name, const std::vector<std::string>& sets,
                      std::vector<std::string>* args_out = nullptr) const {
    std::vector<std::string> all_sets = {"log.dir=" + dir + "/" + log_name,
                                         "checkpoint.dir=" + dir + "/ckpt_" + log_name};
    all_sets.insert(all_sets.end(), sets.begin(), sets.end());
    const std::vector<std::string> args = train_args(recipe, all_sets);
    if (args_out) *args_out = args;
    return run_tessera(args, dir);
  }

  std::string run_log(const std::string& log_name) const {
    return only_run_log(dir + "/" + log_name);
  }
};

bool finite_number(const json& j) { return j.is_number() && std::isfinite(j.get<double>()); }

std::vector<int64_t> steps_of(const std::vector<json>& events) {
  std::vector<int64_t> steps;
  for (const auto& e : events) steps.push_back(e.at("step").get<int64_t>());
  return steps;
}

// How a run that fails after run_start must end its log: the last line is run_end,
// status "failed", with a reason containing `reason`.
void expect_failed_run_end(const std::vector<json>& events, const std::string& reason) {
  ASSERT_FALSE(events.empty());
  const json& last = events.back();
  EXPECT_EQ(last.value("event", ""), "run_end") << last.dump();
  EXPECT_EQ(last.value("status", ""), "failed") << last.dump();
  EXPECT_NE(last.value("reason", "").find(reason), std::string::npos) << last.dump();
  EXPECT_EQ(events_named(events, "run_end").size(), 1u);
}

}  // namespace

// (a) Same recipe, same seed: the same losses, gradient norms and validation losses, to
// the last bit (the JSON carries 17 significant digits).
TEST(Trainer, SameSeedGivesIdenticalRuns) {
  const Workdir s("determinism");
  const std::vector<std::string> sets = {"train.eval_every=4", "train.sample_tokens=8"};
  const ProcessResult a = s.train("runs_a", sets), b = s.train("runs_b", sets);
  ASSERT_TRUE(a.exited && a.exit_code == 0) << a.describe();
  ASSERT_TRUE(b.exited && b.exit_code == 0) << b.describe();
  const auto ea = read_run_log(s.run_log("runs_a")), eb = read_run_log(s.run_log("runs_b"));

  const auto la = metric_losses(ea), lb = metric_losses(eb);
  ASSERT_EQ(la.size(), 8u);
  EXPECT_EQ(la, lb);
  const auto ma = events_named(ea, "metric"), mb = events_named(eb, "metric");
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i].at("grad_norm"), mb[i].at("grad_norm")) << "step " << i + 1;
    EXPECT_EQ(ma[i].at("lr"), mb[i].at("lr")) << "step " << i + 1;
  }
  const auto va = events_named(ea, "eval"), vb = events_named(eb, "eval");
  ASSERT_EQ(va.size(), 2u);
  ASSERT_EQ(vb.size(), 2u);
  for (size_t i = 0; i < va.size(); ++i) EXPECT_EQ(va[i].at("val_loss"), vb[i].at("val_loss"));
  // The greedy sample at the end is the same text.
  const auto sample = [](const std::string& out) { return out.substr(out.find("sample (greedy")); };
  ASSERT_NE(a.out.find("sample (greedy"), std::string::npos) << a.describe();
  ASSERT_NE(b.out.find("sample (greedy"), std::string::npos) << b.describe();
  EXPECT_EQ(sample(a.out), sample(b.out));
}

TEST(Trainer, DifferentSeedGivesDifferentLosses) {
  const Workdir s("seed");
  const ProcessResult a = s.train("runs_a", {"train.steps=3"});
  const ProcessResult b = s.train("runs_b", {"train.steps=3", "train.seed=7"});
  ASSERT_TRUE(a.exited && a.exit_code == 0) << a.describe();
  ASSERT_TRUE(b.exited && b.exit_code == 0) << b.describe();
  const auto la = metric_losses(read_run_log(s.run_log("runs_a")));
  const auto lb = metric_losses(read_run_log(s.run_log("runs_b")));
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  EXPECT_NE(la, lb);
}

// (b) A repeated sentence is easy: within 30 steps the training loss falls from the
// uniform guess ln(256) = 5.55 by well over a nat, and so does the validation loss.
TEST(Trainer, LossFallsOnALearnableCorpus) {
  const Workdir s("learns");
  const ProcessResult r = s.train("runs", {"train.steps=30", "train.eval_every=10"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const auto events = read_run_log(s.run_log("runs"));
  const auto losses = metric_losses(events);
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_NEAR(losses.front(), kLnVocab, 0.3);
  double last5 = 0;
  for (size_t i = losses.size() - 5; i < losses.size(); ++i) last5 += losses[i] / 5;
  EXPECT_LT(last5, losses.front() - 1.5) << "first " << losses.front() << ", last 5 " << last5;

  const auto evals = events_named(events, "eval");
  ASSERT_EQ(steps_of(evals), (std::vector<int64_t>{10, 20, 30}));
  const double v10 = evals[0].at("val_loss").get<double>(), v30 = evals[2].at("val_loss").get<double>();
  EXPECT_LT(v10, kLnVocab - 0.5);
  EXPECT_LT(v30, v10 - 0.2);
}

// (c) The run log of a successful run: run_start with everything needed to reproduce it,
// a metric line per step, eval lines at eval_every and at the end, run_end "ok".
TEST(Trainer, RunLogRecordsTheWholeRun) {
  const Workdir s("runlog");
  std::vector<std::string> args;
  const ProcessResult r =
      s.train("runs", {"train.steps=6", "train.eval_every=4", "model.n_embd=32"}, &args);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_EQ(r.err, "");
  const std::string path = s.run_log("runs");
  ASSERT_FALSE(path.empty()) << "no single run directory under " << s.dir << "/runs";
  const std::string run_id = fs::path(path).parent_path().filename().string();
  EXPECT_TRUE(std::regex_match(run_id, std::regex("[0-9]{8}-[0-9]{6}-[0-9a-f]{6}"))) << run_id;
  EXPECT_NE(r.out.find("log: " + path), std::string::npos) << r.describe();

  const auto events = read_run_log(path);
  ASSERT_GE(events.size(), 3u);
  const std::regex iso("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z");
  for (const auto& e : events) {
    EXPECT_EQ(e.value("schema_version", 0), 1) << e.dump();
    EXPECT_TRUE(e.contains("time") && std::regex_match(e["time"].get<std::string>(), iso))
        << e.dump();
  }

  // run_start
  const json& start = events.front();
  ASSERT_EQ(start.value("event", ""), "run_start");
  EXPECT_EQ(start.value("run_id", ""), run_id);
  std::vector<std::string> argv = {"tessera"};
  argv.insert(argv.end(), args.begin(), args.end());
  EXPECT_EQ(start.at("argv").get<std::vector<std::string>>(), argv);
  // The resolved recipe reads back as the recipe that ran.
  ASSERT_TRUE(start.at("recipe").is_string());
  const tessera::Recipe resolved = tessera::parse_recipe(start["recipe"].get<std::string>(), "run_start");
  EXPECT_EQ(resolved.train.steps, 6);
  EXPECT_EQ(resolved.train.eval_every, 4);
  EXPECT_EQ(resolved.model.n_layer, 1);
  EXPECT_EQ(resolved.model.n_embd, 32);
  EXPECT_EQ(resolved.data.train, s.data + "/train_*.bin");
  EXPECT_EQ(resolved.log.dir, s.dir + "/runs");
  // git, versions, host, pid
  ASSERT_TRUE(start.contains("git")) << start.dump();
  const json& git = start["git"];
  ASSERT_TRUE(git.at("commit").is_string());
  const std::string commit = git["commit"];
  EXPECT_TRUE(commit == "unknown" || std::regex_match(commit, std::regex("[0-9a-f]{40}"))) << commit;
  EXPECT_TRUE(git.at("dirty").is_boolean() || git["dirty"] == "unknown") << git.dump();
  ASSERT_TRUE(start.contains("versions") && start["versions"].is_object()) << start.dump();
  for (const char* key : {"tessera", "compiler", "mpi"})
    EXPECT_TRUE(start["versions"].contains(key) && start["versions"][key].is_string()) << key;
  EXPECT_TRUE(start.contains("host") && start["host"].is_string());
  EXPECT_TRUE(start.contains("pid") && start["pid"].is_number_integer());
  // layout
  const json& layout = start.at("layout");
  EXPECT_EQ(layout.at("dp"), 1);
  EXPECT_EQ(layout.at("tp"), 1);
  EXPECT_EQ(layout.at("pp"), 1);
  EXPECT_EQ(layout.at("world"), 1);
  // data: each shard with its split, size and SHA-256, training shards first
  const json& files = start.at("data").at("files");
  ASSERT_TRUE(files.is_array());
  ASSERT_EQ(files.size(), 2u) << files.dump();
  EXPECT_EQ(files[0].at("path"), s.train_shard());
  EXPECT_EQ(files[0].at("split"), "train");
  EXPECT_EQ(files[1].at("split"), "val");
  EXPECT_EQ(files[0].at("bytes").get<uint64_t>(), fs::file_size(s.train_shard()));
  EXPECT_EQ(files[0].at("sha256"), tessera::sha256_file_hex(s.train_shard()));

  // metric: one per step (log.every 1), in order, with every documented field
  const auto metrics = events_named(events, "metric");
  ASSERT_EQ(steps_of(metrics), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  for (const auto& m : metrics) {
    EXPECT_TRUE(finite_number(m.at("loss"))) << m.dump();
    EXPECT_TRUE(finite_number(m.at("lr")) && m["lr"].get<double>() > 0) << m.dump();
    EXPECT_TRUE(finite_number(m.at("grad_norm")) && m["grad_norm"].get<double>() >= 0) << m.dump();
    EXPECT_TRUE(finite_number(m.at("tokens_per_s")) && m["tokens_per_s"].get<double>() > 0) << m.dump();
    // A 1 ms step on a shared machine can catch a quieter moment than the start-up peak
    // measurement did, so allow some slack above 1; the check is for a formula that is
    // off by orders of magnitude.
    EXPECT_TRUE(finite_number(m.at("mfu")) && m["mfu"].get<double>() > 0 && m["mfu"].get<double>() <= 2)
        << m.dump();
    EXPECT_TRUE(finite_number(m.at("step_ms"))) << m.dump();
    EXPECT_TRUE(finite_number(m.at("peak_rss_mb")) && m["peak_rss_mb"].get<double>() > 0) << m.dump();
    EXPECT_TRUE(m.contains("tokens_seen")) << m.dump();
    if (m.contains("tokens_seen")) {
      EXPECT_EQ(m["tokens_seen"].get<double>(), m["step"].get<double>() * 4 * 32) << m.dump();
    }
  }
  // The schedule: peak lr at step 1 (no warm-up), min_lr at the last step.
  EXPECT_DOUBLE_EQ(metrics.front()["lr"].get<double>(), 1e-2);
  EXPECT_NEAR(metrics.back()["lr"].get<double>(), 1e-3, 1e-9);

  // eval: at eval_every and at the last step
  const auto evals = events_named(events, "eval");
  ASSERT_EQ(steps_of(evals), (std::vector<int64_t>{4, 6}));
  for (const auto& e : evals) EXPECT_TRUE(finite_number(e.at("val_loss"))) << e.dump();

  // order: run_start first, run_end last and once, steps never go back
  int64_t last_step = 0;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    const std::string name = events[i].value("event", "");
    EXPECT_NE(name, "run_start");
    EXPECT_NE(name, "run_end");
    if (name == "metric" || name == "eval") {
      EXPECT_GE(events[i]["step"].get<int64_t>(), last_step);
      last_step = events[i]["step"].get<int64_t>();
    }
  }
  const json& end = events.back();
  ASSERT_EQ(end.value("event", ""), "run_end") << end.dump();
  EXPECT_EQ(end.value("status", ""), "ok") << end.dump();
  EXPECT_EQ(end.at("step"), 6) << end.dump();
}

// docs/run-log.md: "tokens_seen | integer".
TEST(Trainer, TokensSeenIsAnInteger) {
  const Workdir s("tokens_seen");
  const ProcessResult r = s.train("runs", {"train.steps=2"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  for (const auto& m : events_named(read_run_log(s.run_log("runs")), "metric"))
    EXPECT_TRUE(m.at("tokens_seen").is_number_integer()) << m.dump();
}

// docs/run-log.md: run_start's data lists "every training and validation file".
TEST(Trainer, RunStartListsValidationFiles) {
  const Workdir s("val_files");
  const ProcessResult r = s.train("runs", {"train.steps=2", "train.eval_every=1"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const auto events = read_run_log(s.run_log("runs"));
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.front().at("data").dump().find(s.val_shard()), std::string::npos)
      << events.front().at("data").dump();
}

TEST(Trainer, LogEveryAndEvalEveryThinTheLines) {
  const Workdir s("every");
  const ProcessResult r =
      s.train("runs", {"train.steps=7", "log.every=3", "train.eval_every=3"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const auto events = read_run_log(s.run_log("runs"));
  EXPECT_EQ(steps_of(events_named(events, "metric")), (std::vector<int64_t>{3, 6, 7}));
  EXPECT_EQ(steps_of(events_named(events, "eval")), (std::vector<int64_t>{3, 6, 7}));
}

TEST(Trainer, NoValidationWithoutValData) {
  const Workdir s("no_val");
  const ProcessResult r = s.train("runs", {"train.steps=2", "train.eval_every=1", "data.val="});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_TRUE(events_named(read_run_log(s.run_log("runs")), "eval").empty());
}

// (d) A run that fails after run_start: a learning rate of 1e9 blows the weights up, the
// loss stops being finite, and the run ends with one error line, exit code 2 and a
// run_end "failed" that says why.
TEST(Trainer, DivergedRunEndsItsLogFailed) {
  const Workdir s("diverge");
  const ProcessResult r = s.train("runs", {"train.steps=20", "optim.lr=1e9", "optim.min_lr=1e9"});
  EXPECT_TRUE(one_error_line(r, {"training diverged", "optim.lr"}));
  const std::string path = s.run_log("runs");
  ASSERT_FALSE(path.empty());
  const auto events = read_run_log(path);
  ASSERT_EQ(events.front().value("event", ""), "run_start");
  expect_failed_run_end(events, "training diverged");
  // No metric line carries the non-finite loss.
  for (const auto& m : events_named(events, "metric")) EXPECT_TRUE(finite_number(m.at("loss"))) << m.dump();
  EXPECT_LT(events_named(events, "metric").size(), 20u);
}

// A damaged validation shard: the run fails naming the shard and the fault, and if it
// had started its log, the log ends with run_end "failed".
TEST(Trainer, BadValidationShardFailsTheRunCleanly) {
  const Workdir s("bad_val");
  std::vector<uint16_t> tokens = pattern_tokens(500);
  tokens[42] = 300;
  write_raw_shard(s.val_shard(), tokens);
  const ProcessResult r = s.train("runs", {"train.steps=4", "train.eval_every=2"});
  EXPECT_TRUE(
      one_error_line(r, {s.val_shard(), "token 300 at index 42", ">= model.vocab_size 256"}));
  const std::string path = s.run_log("runs");
  if (path.empty()) return;  // refused before the run started: fine
  const auto events = read_run_log(path);
  if (events.empty()) return;
  ASSERT_EQ(events.front().value("event", ""), "run_start");
  expect_failed_run_end(events, s.val_shard());
}

// A checkpoint directory that cannot be created: one error line naming it, exit code 2,
// and if the run had started its log, run_end "failed" naming the directory.
TEST(Trainer, UnwritableCheckpointDirectoryFailsTheRunCleanly) {
  const Workdir s("bad_ckpt");
  write_text(s.dir + "/a_file", "");
  const std::string bad = s.dir + "/a_file/ckpt";
  const std::vector<std::string> sets = {"log.dir=" + s.dir + "/runs", "checkpoint.dir=" + bad,
                                         "train.steps=2"};
  const ProcessResult r = run_tessera(train_args(s.recipe, sets), s.dir);
  EXPECT_TRUE(one_error_line(r, {bad}));
  const std::string path = s.run_log("runs");
  if (path.empty()) return;
  const auto events = read_run_log(path);
  if (events.empty()) return;
  ASSERT_EQ(events.front().value("event", ""), "run_start");
  expect_failed_run_end(events, bad);
}

// trainer.h: "Bad recipes and data throw tessera::Error before any step runs". A bad
// validation shard must not cost the training steps before the first evaluation.
TEST(Trainer, BadValidationShardIsRefusedBeforeTheFirstStep) {
  const Workdir s("bad_val_early");
  write_raw_shard(s.val_shard(), pattern_tokens(500), /*magic=*/12345);
  const ProcessResult r = s.train("runs", {"train.steps=4", "train.eval_every=4"});
  EXPECT_TRUE(one_error_line(r, {s.val_shard(), "bad magic"}));
  const std::string path = s.run_log("runs");
  if (path.empty()) return;
  EXPECT_TRUE(events_named(read_run_log(path), "metric").empty())
      << "steps ran before the bad validation shard was noticed";
}

// model.seq_len 1 is a valid recipe; the greedy sample at the end must not fail it.
TEST(Trainer, SampleWorksWithShortestContext) {
  const Workdir s("seq_len_1");
  const ProcessResult r =
      s.train("runs", {"train.steps=2", "model.seq_len=1", "train.sample_tokens=4"});
  EXPECT_TRUE(r.exited && r.exit_code == 0) << r.describe();
}
