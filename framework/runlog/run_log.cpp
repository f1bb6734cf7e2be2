// RunLog: see run_log.h and docs/run-log.md.
#include "framework/runlog/run_log.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <random>

#include "base/error.h"
#include "framework/util/system_info.h"

#ifndef TESSERA_SOURCE_DIR
#define TESSERA_SOURCE_DIR ""
#endif

namespace tessera {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// Time and run ids

namespace {

std::tm utc_now(int* millis) {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  if (millis) *millis = static_cast<int>(ms % 1000);
  return tm;
}

}  // namespace

std::string utc_timestamp() {
  int ms = 0;
  const std::tm tm = utc_now(&ms);
  char buf[64];  // roomy: -Wformat-truncation assumes any int width
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::string make_run_id() {
  const std::tm tm = utc_now(nullptr);
  // The random suffix tells apart runs started in the same second (a sweep submitting
  // many jobs at once).
  uint32_t bits = 0;
  try {
    bits = std::random_device{}();
  } catch (const std::exception&) {
    // No entropy source: fall back to the clock and pid, still distinct per process.
    bits = static_cast<uint32_t>(
        std::chrono::steady_clock::now().time_since_epoch().count() ^ (getpid() << 8));
  }
  char buf[64];  // roomy: -Wformat-truncation assumes any int width
  std::snprintf(buf, sizeof buf, "%04d%02d%02d-%02d%02d%02d-%06x", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                bits & 0xffffffu);
  return buf;
}

// ---------------------------------------------------------------------------------------
// Git

namespace {

// Runs a shell command; returns its standard output if it exited with status 0.
std::optional<std::string> run_command(const std::string& command) {
  std::FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return out;
}

// Quotes s for /bin/sh: 'it'\''s'.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

nlohmann::json git_info(const std::string& source_dir) {
  nlohmann::json g = {{"commit", "unknown"}, {"dirty", "unknown"}};
  std::error_code ec;
  if (source_dir.empty() || !fs::is_directory(source_dir, ec)) return g;

  // GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock, so a run starting
  // never gets in the way of someone committing in the same tree. stderr is dropped:
  // "not a git repository" is an expected answer here, not an error.
  const std::string git = "GIT_OPTIONAL_LOCKS=0 git -C " + shell_quote(source_dir) + " ";
  if (auto head = run_command(git + "rev-parse HEAD 2>/dev/null")) {
    std::string commit = *head;
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back())))
      commit.pop_back();
    const bool hex = !commit.empty() && commit.find_first_not_of("0123456789abcdef") ==
                                            std::string::npos;
    if (hex) g["commit"] = commit;
  }
  if (auto status = run_command(git + "status --porcelain 2>/dev/null")) {
    g["dirty"] = !status->empty();
  }
  return g;
}

// ---------------------------------------------------------------------------------------
// RunLog

RunLog::RunLog(const std::string& log_dir, const std::string& run_id, bool writer)
    : run_id_(run_id), path_((fs::path(log_dir) / run_id / "run.jsonl").string()) {
  if (!writer) return;
  const fs::path dir = fs::path(log_dir) / run_id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw Error("cannot create run log directory '" + dir.string() + "': " +
                (ec ? ec.message() : std::string("a file of that name is in the way")) +
                " (set log.dir to a writable directory)");
  }
  // Append, never truncate: the file is the record of the run and must not lose lines.
  file_ = std::fopen(path_.c_str(), "a");
  if (!file_) {
    throw Error("cannot open run log '" + path_ + "' for appending: " +
                std::strerror(errno));
  }
}

RunLog::~RunLog() {
  try {
    if (started_ && !ended_) run_end("failed", "run log closed without run_end");
  } catch (...) {
    // A destructor must not throw; the line is lost, the file stays valid JSON lines.
  }
  if (file_) std::fclose(file_);
}

namespace {

// Appends the caller's fields to a line. Keys the line already has win (the step passed
// as an argument, the reserved event/schema_version/time), so a caller cannot produce a
// line that lies about what it is.
void append_fields(nlohmann::ordered_json& line, const std::string& event,
                   const nlohmann::json& fields) {
  if (fields.is_null()) return;
  if (!fields.is_object()) {
    throw Error("run log event '" + event + "': fields must be a JSON object, got " +
                std::string(fields.type_name()));
  }
  for (const auto& [key, value] : fields.items()) {
    if (key == "event" || key == "schema_version" || key == "time") continue;
    if (!line.contains(key)) line[key] = nlohmann::ordered_json(value);
  }
}

}  // namespace

void RunLog::write_line(const std::string& event, const nlohmann::ordered_json& body) {
  if (!file_) return;
  // ordered_json keeps event, schema_version and time first, where a reader looks, then
  // the body in the order it was built.
  nlohmann::ordered_json line;
  line["event"] = event;
  line["schema_version"] = kSchemaVersion;
  line["time"] = utc_timestamp();
  for (const auto& [key, value] : body.items()) line[key] = value;
  // error_handler_t::replace: a stray non-UTF-8 byte in argv or a file name becomes
  // U+FFFD instead of throwing halfway through a training run. NaN and inf become null.
  std::string text =
      line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text += '\n';
  // One fwrite and a flush per line, so a crash leaves complete lines: a reader sees at
  // worst a missing last line, never half of one from an earlier event.
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() ||
      std::fflush(file_) != 0) {
    throw Error("cannot write run log '" + path_ + "': " + std::strerror(errno));
  }
}

void RunLog::note_step(const nlohmann::json& fields) {
  if (fields.is_object()) {
    auto it = fields.find("step");
    if (it != fields.end() && it->is_number_integer()) last_step_ = it->get<int64_t>();
  }
}

void RunLog::run_start(const nlohmann::json& fields) {
  std::lock_guard lock(mutex_);
  if (started_) throw Error("run log '" + path_ + "': run_start written twice");
  nlohmann::ordered_json body;
  body["run_id"] = run_id_;
  append_fields(body, "run_start", fields);  // validates on every rank alike
  started_ = true;
  if (!file_) return;  // non-writers skip the git and version queries entirely

  // What RunLog adds. A caller that already knows better (e.g. the git state of another
  // tree) keeps its value.
  auto add = [&](const char* key, auto&& make) {
    if (!body.contains(key)) body[key] = nlohmann::ordered_json(make());
  };
  add("git", [] { return git_info(TESSERA_SOURCE_DIR); });
  add("versions", [] { return software_versions(); });
  add("host", [] { return host_name(); });
  add("pid", [] { return static_cast<int64_t>(getpid()); });
  write_line("run_start", body);
}

void RunLog::step_event(const std::string& event, int64_t step,
                        const nlohmann::json& fields) {
  std::lock_guard lock(mutex_);
  nlohmann::ordered_json body;
  body["step"] = step;
  append_fields(body, event, fields);
  last_step_ = step;
  write_line(event, body);
  if (!tensorboard_) return;
  // The same numbers as the line, as float32 scalars tagged "train/<key>" (metric) or
  // "eval/<key>"; nulls (no MFU, a NaN) and non-numbers are left out, as in the line.
  const std::string prefix = event == "metric" ? "train/" : "eval/";
  for (const auto& [key, value] : body.items())
    if (key != "step" && value.is_number() && std::isfinite(value.get<double>()))
      tensorboard_->scalar(prefix + key, step, value.get<double>());
  tensorboard_->flush();
}

void RunLog::write_tensorboard() {
  std::lock_guard lock(mutex_);
  if (file_ && !tensorboard_)
    tensorboard_ = std::make_unique<TensorBoardWriter>(fs::path(path_).parent_path().string());
}

void RunLog::metric(int64_t step, const nlohmann::json& fields) {
  step_event("metric", step, fields);
}

void RunLog::eval(int64_t step, const nlohmann::json& fields) {
  step_event("eval", step, fields);
}

void RunLog::checkpoint(const nlohmann::json& fields) { event("checkpoint", fields); }

void RunLog::event(const std::string& name, const nlohmann::json& fields) {
  if (name == "run_start" || name == "run_end") {
    throw Error("run log: write '" + name + "' with RunLog::" + name + "(), not event()");
  }
  if (name.empty()) throw Error("run log: event name must not be empty");
  std::lock_guard lock(mutex_);
  nlohmann::ordered_json body;
  append_fields(body, name, fields);
  note_step(fields);
  write_line(name, body);
}

void RunLog::run_end(const std::string& status, const std::string& reason) {
  if (status != "ok" && status != "failed" && status != "interrupted") {
    throw Error("run log: run_end status '" + status +
                "' is not one of ok, failed, interrupted");
  }
  std::lock_guard lock(mutex_);
  if (ended_) return;  // the first word on how the run ended stands
  ended_ = true;
  nlohmann::ordered_json body;
  body["status"] = status;
  body["reason"] = reason;
  body["step"] = last_step_ ? nlohmann::ordered_json(*last_step_) : nullptr;
  write_line("run_end", body);
}

}  // namespace tessera
