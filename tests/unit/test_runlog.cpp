// RunLog: write a log in a temporary directory, read it back line by line.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "framework/runlog/run_log.h"
#include "base/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class RunLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tessera_runlog_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Every line of the file, each parsed (a parse failure fails the test with the line).
  static std::vector<json> read_lines(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in) << "cannot open " << path;
    std::vector<json> lines;
    std::string text;
    while (std::getline(in, text)) {
      EXPECT_FALSE(text.empty()) << "empty line in " << path;
      json j;
      EXPECT_NO_THROW(j = json::parse(text)) << "not JSON: " << text;
      lines.push_back(j);
    }
    return lines;
  }

  // The fields every line must carry.
  static void expect_envelope(const json& line) {
    static const std::regex iso(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
    ASSERT_TRUE(line.is_object()) << line;
    ASSERT_TRUE(line.contains("event") && line["event"].is_string()) << line;
    EXPECT_EQ(line.value("schema_version", -1), 1) << line;
    ASSERT_TRUE(line.contains("time") && line["time"].is_string()) << line;
    EXPECT_TRUE(std::regex_match(line["time"].get<std::string>(), iso)) << line["time"];
  }

  fs::path dir_;
};

TEST(RunId, HasDateTimeAndSixHexDigits) {
  const std::string id = tessera::make_run_id();
  EXPECT_TRUE(std::regex_match(id, std::regex(R"(\d{8}-\d{6}-[0-9a-f]{6})"))) << id;
  EXPECT_NE(id, tessera::make_run_id());  // 24 random bits: a clash is 1 in 16 million
}

TEST(RunId, TimestampIsIsoUtcWithMilliseconds) {
  const std::string t = tessera::utc_timestamp();
  EXPECT_TRUE(std::regex_match(t, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)")))
      << t;
}

TEST_F(RunLogTest, WritesEveryEventAsOneJsonLine) {
  const std::string id = tessera::make_run_id();
  std::string path;
  {
    tessera::RunLog log(dir_.string(), id, /*writer=*/true);
    path = log.path();
    EXPECT_EQ(path, (dir_ / id / "run.jsonl").string());
    log.run_start({{"argv", {"tessera", "train", "recipes/tiny.yaml"}},
                   {"recipe", "model:\n  n_layer: 2\n"},
                   {"layout", {{"dp", 1}, {"tp", 1}, {"pp", 1}, {"world", 1}}},
                   {"data", {{"files", {{{"path", "a.bin"}, {"bytes", 1024},
                                         {"fnv1a64", "cbf29ce484222325"}}}}}}});
    log.metric(1, {{"loss", 5.5}, {"lr", 1e-4}, {"grad_norm", 1.25}, {"tokens_per_s", 100.0}});
    log.metric(2, {{"loss", std::nan("")}, {"lr", 2e-4}});
    log.eval(2, {{"val_loss", 5.25}});
    log.checkpoint({{"path", "ckpt/step_000002"}, {"step", 2}});
    log.event("export", {{"format", "gguf"}, {"path", "out.gguf"}});
    log.run_end("ok", "");
  }

  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 7u);
  for (const auto& line : lines) expect_envelope(line);
  std::vector<std::string> events;
  for (const auto& line : lines) events.push_back(line["event"]);
  EXPECT_EQ(events, (std::vector<std::string>{"run_start", "metric", "metric", "eval",
                                              "checkpoint", "export", "run_end"}));

  const json& start = lines[0];
  EXPECT_EQ(start["run_id"], id);
  EXPECT_EQ(start["argv"][2], "recipes/tiny.yaml");
  EXPECT_EQ(start["recipe"], "model:\n  n_layer: 2\n");
  EXPECT_EQ(start["layout"]["world"], 1);
  EXPECT_EQ(start["data"]["files"][0]["fnv1a64"], "cbf29ce484222325");
  // What RunLog adds itself.
  ASSERT_TRUE(start.contains("git"));
  ASSERT_TRUE(start["git"].contains("commit"));
  ASSERT_TRUE(start["git"].contains("dirty"));
  EXPECT_TRUE(start["git"]["commit"].is_string());
  EXPECT_TRUE(start["git"]["dirty"].is_boolean() || start["git"]["dirty"] == "unknown");
  EXPECT_EQ(start["versions"]["tessera"], "0.1.0");
  for (const char* key : {"compiler", "mpi", "yaml_cpp", "eigen", "nlohmann_json"})
    EXPECT_TRUE(start["versions"].contains(key)) << key;
  EXPECT_EQ(start["versions"]["mpi"], "not initialized");  // no MPI_Init in unit tests
  EXPECT_TRUE(start["host"].is_string());
  EXPECT_EQ(start["pid"], getpid());

  EXPECT_EQ(lines[1]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[1]["loss"].get<double>(), 5.5);
  EXPECT_DOUBLE_EQ(lines[1]["grad_norm"].get<double>(), 1.25);
  EXPECT_TRUE(lines[2]["loss"].is_null()) << "NaN must be written as null, got " << lines[2];
  EXPECT_EQ(lines[3]["step"], 2);
  EXPECT_DOUBLE_EQ(lines[3]["val_loss"].get<double>(), 5.25);
  EXPECT_EQ(lines[4]["path"], "ckpt/step_000002");
  EXPECT_EQ(lines[5]["format"], "gguf");
  EXPECT_EQ(lines[6]["status"], "ok");
  EXPECT_EQ(lines[6]["reason"], "");
  EXPECT_EQ(lines[6]["step"], 2);
}

TEST_F(RunLogTest, EnvelopeComesFirstAndCannotBeOverridden) {
  tessera::RunLog log(dir_.string(), "r1", true);
  log.metric(7, {{"event", "fake"}, {"schema_version", 99}, {"time", "x"}, {"step", 8},
                 {"loss", 1.0}});
  std::ifstream in(log.path());
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text.rfind("{\"event\":\"metric\",\"schema_version\":1,\"time\":", 0), 0u) << text;
  const json line = json::parse(text);
  EXPECT_EQ(line["step"], 7);  // the argument wins over fields["step"]
  EXPECT_EQ(line["loss"], 1.0);
}

TEST_F(RunLogTest, DestructorEndsAStartedRunAsFailed) {
  std::string path;
  {
    tessera::RunLog log(dir_.string(), "r1", true);
    path = log.path();
    log.run_start({{"argv", {"tessera"}}});
    log.metric(5, {{"loss", 3.0}});
    // No run_end: as if an exception unwound the trainer.
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  expect_envelope(lines.back());
  EXPECT_EQ(lines.back()["event"], "run_end");
  EXPECT_EQ(lines.back()["status"], "failed");
  EXPECT_EQ(lines.back()["reason"], "run log closed without run_end");
  EXPECT_EQ(lines.back()["step"], 5);
}

TEST_F(RunLogTest, DestructorWritesNothingIfNeverStartedOrAlreadyEnded) {
  std::string path;
  {
    tessera::RunLog log(dir_.string(), "never_started", true);
    path = log.path();
  }
  EXPECT_TRUE(read_lines(path).empty());
  {
    tessera::RunLog log(dir_.string(), "ended", true);
    path = log.path();
    log.run_start({});
    log.run_end("interrupted", "SIGTERM");
    log.run_end("failed", "ignored: the first run_end stands");
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["status"], "interrupted");
  EXPECT_EQ(lines[1]["reason"], "SIGTERM");
  EXPECT_TRUE(lines[1]["step"].is_null());
}

TEST_F(RunLogTest, NonWriterTouchesNothing) {
  tessera::RunLog log(dir_.string(), "r1", /*writer=*/false);
  EXPECT_EQ(log.path(), (dir_ / "r1" / "run.jsonl").string());
  EXPECT_FALSE(log.writer());
  log.run_start({{"argv", {"x"}}});
  log.metric(1, {{"loss", 1.0}});
  log.run_end("ok", "");
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(RunLogTest, ReopeningAppends) {
  std::string path;
  for (int i = 0; i < 2; ++i) {
    tessera::RunLog log(dir_.string(), "resumed", true);
    path = log.path();
    log.metric(i, {{"loss", 1.0}});
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 0);
  EXPECT_EQ(lines[1]["step"], 1);
}

TEST_F(RunLogTest, UnwritableDirectoryNamesIt) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "blocker") << "a file where the log directory should go";
  const std::string log_dir = (dir_ / "blocker").string();
  try {
    tessera::RunLog log(log_dir, "r1", true);
    FAIL() << "expected tessera::Error";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find(log_dir), std::string::npos) << e.what();
  }
}

TEST_F(RunLogTest, RejectsMisuseWithClearErrors) {
  tessera::RunLog log(dir_.string(), "r1", true);
  EXPECT_THROW(log.run_end("success", ""), tessera::Error);
  EXPECT_THROW(log.metric(1, json::array({1, 2})), tessera::Error);
  EXPECT_THROW(log.event("run_end", {}), tessera::Error);
  log.run_start({});
  EXPECT_THROW(log.run_start({}), tessera::Error);
  // Invalid UTF-8 (e.g. from argv) must not throw: it is replaced.
  EXPECT_NO_THROW(log.event("note", {{"text", std::string("bad \xff byte")}}));
  log.run_end("ok", "");
  const auto lines = read_lines(log.path());
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& line : lines) expect_envelope(line);
}

TEST(GitInfo, UnknownOutsideAGitTree) {
  const json g = tessera::git_info("/nonexistent/tessera/source");
  EXPECT_EQ(g["commit"], "unknown");
  EXPECT_EQ(g["dirty"], "unknown");
}

TEST(GitInfo, SourceTreeHasCommitAndDirtyFields) {
  const json g = tessera::git_info(TESSERA_SOURCE_DIR);
  ASSERT_TRUE(g.contains("commit"));
  ASSERT_TRUE(g.contains("dirty"));
  const std::string commit = g["commit"];
  EXPECT_TRUE(commit == "unknown" ||
              std::regex_match(commit, std::regex("[0-9a-f]{40}([0-9a-f]{24})?")))
      << commit;
}

}  // namespace

// CRC-32C as TensorBoard's record framing needs it: the check value of the Castagnoli
// polynomial and the test vectors of RFC 3720 (iSCSI), B.4.
TEST(TensorBoard, Crc32cMatchesStandardVectors) {
  EXPECT_EQ(tessera::crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(tessera::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(tessera::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; i++) ascending += (char)i;
  EXPECT_EQ(tessera::crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);
  EXPECT_EQ(tessera::crc32c("", 0), 0u);
}

// The mask TFRecord applies to stored CRCs: rotate right by 15, add 0xA282EAD8.
TEST(TensorBoard, MaskedCrcRotatesAndAdds) {
  const uint32_t c = tessera::crc32c("123456789", 9);
  EXPECT_EQ(tessera::masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
  EXPECT_EQ(tessera::masked_crc32c("123456789", 9), 0xC78AB0E5u);
}
