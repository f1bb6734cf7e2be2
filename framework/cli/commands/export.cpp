// `tessera export --ckpt DIR --format safetensors --out PATH`: a checkpoint's model for
// another program (framework/tools/export.h).
#include <cstdio>
#include <string>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/tools/export.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera export --ckpt DIR --format gguf|safetensors --out PATH [options]

Writes a checkpoint's model in a format another program serves, reading the checkpoint one
tensor at a time (any parallel layout; a LoRA run's adapters are merged into its base; the
padded vocabulary is cut to the real one). Everything is written beside PATH under a
temporary name and renamed into place at the end. Each export writes its lineage (the
checkpoint, the run, the data files' sha256) to PATH.lineage.json (gguf) or
PATH/lineage.json, and into the run log of the run that wrote the checkpoint.

  gguf         PATH is one file for llama.cpp (architecture gpt2, tokenizer inside)
  safetensors  PATH is a directory for Hugging Face transformers (GPT2LMHeadModel):
               model.safetensors (split with an index past --max-shard-mb), config.json,
               and for GPT-2 BPE models vocab.json, merges.txt, tokenizer_config.json

options:
  --ckpt DIR          a step directory or a directory holding `latest` (verified first)
  --format F          gguf or safetensors
  --out PATH          what to create; it must not exist unless --force
  --dtype T           f32 (default), f16 or bf16 (rounded to nearest, ties to even), or
                      q8_0 (gguf: ggml's 8-bit blocks); vectors stay f32 in gguf
  --max-shard-mb N    safetensors: split the weights into files of at most N MB (default 2000)
  --force             replace an existing PATH (the old one goes once the new one is whole)
  --help              print this text
)";

}  // namespace

int cmd_export(const Args& args) {
  const ParsedArgs p = parse_args(args, "export", {"--force"});
  if (p.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  check(p.positional.empty(), "tessera export: unexpected argument '" +
                                  (p.positional.empty() ? "" : p.positional[0]) +
                                  "' (see tessera export --help)");
  ExportOptions o;
  for (const auto& [flag, value] : p.options) {
    if (flag == "--ckpt") o.checkpoint = value;
    else if (flag == "--format") o.format = value;
    else if (flag == "--out") o.out = value;
    else if (flag == "--dtype") o.dtype = value;
    else if (flag == "--force") o.force = true;
    else if (flag == "--max-shard-mb") o.max_shard_bytes = parse_integer("export", flag, value, 1) * 1'000'000;
    else throw Error("tessera export: unknown option " + flag + " (see tessera export --help)");
  }
  check(!o.checkpoint.empty() && !o.format.empty() && !o.out.empty(),
        "tessera export: --ckpt DIR, --format F and --out PATH are required");
  require_one_process("export");
  const ExportResult r = export_model(o);
  std::printf("exported %s (%lld tensors, %s %s) to %s in %.1f s\n", r.checkpoint.c_str(),
              (long long)r.tensors, o.format.c_str(), o.dtype.c_str(), r.path.c_str(), r.seconds);
  for (const ExportedFile& f : r.files)
    std::printf("  %s  %lld bytes  sha256 %s\n", f.path.c_str(), (long long)f.bytes, f.sha256.c_str());
  std::printf("lineage: %s\n", r.lineage.c_str());
  std::printf("run log: %s\n", r.run_log.empty() ? "(not found here; the lineage file has the record)"
                                                  : r.run_log.c_str());
  return 0;
}

}  // namespace tessera::cli
