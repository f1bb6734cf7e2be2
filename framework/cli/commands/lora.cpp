// `tessera lora merge --ckpt DIR --out DIR`: folds a LoRA run's adapters into its base
// model (framework/tools/lora_merge.h).
#include <cstdio>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/tools/lora_merge.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera lora merge --ckpt DIR --out DIR

Writes one full checkpoint with a LoRA run's adapters folded into its base model:
W' = W + (lora.alpha / lora.rank) B @ A for every adapted layer. The base model is the
checkpoint the LoRA run recorded (lora.base); both are verified first. The result has
the base model's tensors, parameters only, and a recipe with lora.rank 0: use it with
`tessera generate`, as another run's lora.base, or export it.

options:
  --ckpt DIR   the LoRA checkpoint: a step directory or a directory holding `latest`
  --out DIR    where the merged step_XXXXXX/ directory and `latest` go
  --help       print this text
)";

}  // namespace

int cmd_lora(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  check(sub == "merge", "tessera lora: expected the subcommand 'merge' (tessera lora --help)");
  const ParsedArgs p = parse_args(Args(args.begin() + 1, args.end()), "lora merge");
  if (p.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  check(p.positional.empty(), "tessera lora merge: unexpected argument '" +
                                  (p.positional.empty() ? "" : p.positional[0]) +
                                  "' (see tessera lora --help)");
  std::string ckpt, out;
  for (const auto& [flag, value] : p.options) {
    if (flag == "--ckpt") ckpt = value;
    else if (flag == "--out") out = value;
    else throw Error("tessera lora merge: unknown option " + flag + " (see tessera lora --help)");
  }
  check(!ckpt.empty() && !out.empty(), "tessera lora merge: --ckpt DIR and --out DIR are required");
  require_one_process("lora merge");
  const std::string written = merge_lora_checkpoint(ckpt, out);
  std::printf("merged: %s\n", written.c_str());
  return 0;
}

}  // namespace tessera::cli
