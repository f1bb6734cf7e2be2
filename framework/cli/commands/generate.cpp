// `tessera generate --ckpt DIR --prompt TEXT`: continues a prompt with the model of a
// checkpoint (framework/tools/generate.h), tokenized as the training data was.
#include <cstdio>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/data/prepare.h"
#include "framework/data/shard.h"
#include "framework/data/tokenizer.h"
#include "framework/tools/generate.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera generate --ckpt DIR --prompt TEXT [options]

Continues TEXT with the model of a checkpoint, in one process. The recipe comes from the
checkpoint; its parameters are read whatever layout wrote them, after every shard's
checksums are verified. TEXT is tokenized with the tokenizer that made the training data
(the meta.json beside the shards the recipe's data.train names). Prints the prompt and
its continuation.

options:
  --ckpt DIR          a step directory (ckpt/step_000200) or a directory holding `latest`
  --prompt TEXT       the text to continue (required, not empty)
  --tokens N          tokens to add (default 64)
  --temperature T     0 (default): greedy, the most likely token each time; T > 0: sample
                      from softmax(logits / T)
  --seed S            seed of the sampling (default 1337): the same seed, the same text
  --device D          cpu (default) or cuda: where the model computes (one GPU; the
                      checkpoint reads the same whichever device trained it)
  --logits-out FILE   also write the prompt's token ids and the logits at each of its
                      positions (one forward pass) to FILE as JSON {"tokens": [T ids],
                      "logits": [T rows of vocab_size]}: to check an export against
  --help              print this text
)";

// The logits as JSON, each float with 9 significant digits (float32 round-trips exactly).
void write_prompt_logits(GPTModel& model, const std::vector<int>& ids, const std::string& path) {
  const std::vector<int32_t> tokens(ids.begin(), ids.end());
  const std::vector<float> logits = prompt_logits(model, tokens);
  const int V = model.config().vocab_size;
  std::FILE* f = std::fopen(path.c_str(), "w");
  check(f != nullptr, "tessera generate: cannot create --logits-out " + path);
  std::fputs("{\"tokens\": [", f);
  for (size_t t = 0; t < tokens.size(); t++) std::fprintf(f, "%s%d", t ? ", " : "", tokens[t]);
  std::fputs("],\n\"logits\": [", f);
  for (size_t t = 0; t < tokens.size(); t++) {
    std::fputs(t ? ",\n[" : "[", f);
    for (int v = 0; v < V; v++) std::fprintf(f, "%s%.9g", v ? "," : "", logits[t * V + v]);
    std::fputc(']', f);
  }
  std::fputs("]}\n", f);
  check(std::fclose(f) == 0, "tessera generate: cannot write --logits-out " + path);
}

}  // namespace

int cmd_generate(const Args& args) {
  const ParsedArgs p = parse_args(args, "generate");
  if (p.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  check(p.positional.empty(), "tessera generate: unexpected argument '" +
                                  (p.positional.empty() ? "" : p.positional[0]) +
                                  "' (see tessera generate --help)");
  std::string ckpt, prompt, logits_out;
  bool have_prompt = false;
  SamplingOptions o;
  kernels::Device device = kernels::Device::cpu;
  for (const auto& [flag, value] : p.options) {
    if (flag == "--ckpt") {
      ckpt = value;
    } else if (flag == "--prompt") {
      prompt = value, have_prompt = true;
    } else if (flag == "--tokens") {
      o.tokens = (int)parse_integer("generate", flag, value, 0);
    } else if (flag == "--temperature") {
      o.temperature = parse_number("generate", flag, value, 0);
    } else if (flag == "--seed") {
      o.seed = (uint64_t)parse_integer("generate", flag, value, 0);
    } else if (flag == "--device") {
      device = parse_device("generate", value);
    } else if (flag == "--logits-out") {
      logits_out = value;
    } else {
      throw Error("tessera generate: unknown option " + flag + " (see tessera generate --help)");
    }
  }
  check(!ckpt.empty(), "tessera generate: --ckpt DIR is required (see --help)");
  check(have_prompt && !prompt.empty(), "tessera generate: --prompt TEXT is required, not empty");
  check(o.tokens <= 1'000'000, "tessera generate: --tokens is at most 1000000");
  require_one_process("generate");
  device_backend("generate", device);

  CheckpointModel m = load_checkpoint_model(ckpt, device);
  const auto tokenizer = data_tokenizer(expand_shard_pattern(m.recipe.data.train).front());
  const std::vector<int> ids = tokenizer->encode(prompt);
  if (!logits_out.empty()) write_prompt_logits(*m.model, ids, logits_out);
  const std::vector<int32_t> out =
      continue_tokens(*m.model, std::vector<int32_t>(ids.begin(), ids.end()), o);
  const std::string text = tokenizer->decode(std::vector<int>(out.begin(), out.end()));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace tessera::cli
