// `tessera data prepare`: text file -> llm.c token shards (framework/data/prepare.h).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "framework/cli/commands/commands.h"
#include "framework/data/prepare.h"
#include "base/error.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera data prepare --input FILE --out DIR [options]

Tokenizes a text file into llm.c token shards for training and validation:
  DIR/train_000000.bin ...   the first (1 - F) of the tokens
  DIR/val_000000.bin ...     the last F of the tokens (held-out text)
  DIR/meta.json              tokenizer, vocabulary, token counts, input SHA-256

options:
  --input FILE          the text to tokenize (required)
  --out DIR             output directory, created if missing (required)
  --tokenizer KIND      bytes (default; vocab 256) or gpt2 (GPT-2 BPE, vocab 50257)
  --encoder FILE        gpt2 only: encoder.json
  --merges FILE         gpt2 only: vocab.bpe
  --val-fraction F      fraction held out for validation, 0 <= F < 1 (default 0.1)
  --shard-tokens N      tokens per shard file (default 100000000)
  --help                print this text

With gpt2, blank lines ("\n\n") separate documents and each document starts with
<|endoftext|>. Then set data.train: DIR/train_*.bin, data.val: DIR/val_*.bin and
model.vocab_size to the printed vocabulary size.
)";

double parse_fraction(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0') {
    throw Error(flag + ": '" + value + "' is not a number (expected a fraction 0 <= F < 1)");
  }
  return v;
}

int64_t parse_count(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno == ERANGE) {
    throw Error(flag + ": '" + value + "' is not a whole number");
  }
  return v;
}

}  // namespace

int cmd_data_prepare(const Args& args) {
  PrepareOptions o;
  bool have_input = false, have_out = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag.rfind("--", 0) != 0) {
      throw Error("data prepare: unexpected argument '" + flag + "' (see tessera data "
                  "prepare --help)");
    }
    // Accept both "--flag value" and "--flag=value".
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      value = args[++i];
    } else {
      throw Error("data prepare: " + flag + " needs a value (see tessera data prepare --help)");
    }

    if (flag == "--input") {
      o.input = value, have_input = true;
    } else if (flag == "--out") {
      o.out_dir = value, have_out = true;
    } else if (flag == "--tokenizer") {
      o.tokenizer = value;
    } else if (flag == "--encoder") {
      o.encoder = value;
    } else if (flag == "--merges") {
      o.merges = value;
    } else if (flag == "--val-fraction") {
      o.val_fraction = parse_fraction(flag, value);
    } else if (flag == "--shard-tokens") {
      o.shard_tokens = parse_count(flag, value);
    } else {
      throw Error("data prepare: unknown option " + flag + " (see tessera data prepare --help)");
    }
  }
  if (!have_input) throw Error("data prepare: --input FILE is required (see --help)");
  if (!have_out) throw Error("data prepare: --out DIR is required (see --help)");

  const PrepareResult r = prepare_data(o);

  std::printf("tessera data prepare: %s -> %s (tokenizer %s, vocab_size %d)\n",
              o.input.c_str(), o.out_dir.c_str(), o.tokenizer.c_str(), r.vocab_size);
  const auto list = [](const char* name, int64_t tokens, const std::vector<std::string>& files) {
    std::printf("  %-5s %12lld tokens in %zu shard(s)", name, static_cast<long long>(tokens),
                files.size());
    if (!files.empty()) std::printf(": %s%s", files.front().c_str(), files.size() > 1 ? " ..." : "");
    std::printf("\n");
  };
  list("train", r.train_tokens, r.train_files);
  list("val", r.val_tokens, r.val_files);
  std::printf("  meta  %s (input sha256 %s)\n", r.meta_path.c_str(), r.source_sha256.c_str());
  for (const auto& f : r.removed_stale) std::printf("  removed stale shard %s\n", f.c_str());
  return 0;
}

}  // namespace tessera::cli
