// `tessera ckpt inspect DIR` and `tessera ckpt verify DIR`: what a checkpoint holds, and
// whether every byte of it still matches its checksums (checkpoint/checkpoint.h).
#include <cstdio>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/format.h"
#include "framework/cli/commands/commands.h"
#include "base/error.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage = R"(usage: tessera ckpt inspect DIR [--no-verify]
       tessera ckpt verify DIR

DIR is a checkpoint's step directory (ckpt/step_000200) or a directory holding `latest`.

  inspect      prints the step, tokens seen, data position, run id, library version, the
               layout that wrote it, every shard file (rank, bytes, pieces, checksum) and
               every logical tensor (name, shape, pieces, bytes), then reads every shard
               and checks its checksums
  --no-verify  inspect only: skip reading the shards' data
  verify       reads every piece of every shard and checks its checksums

Exit code 0, or 2 with one line on stderr when the checkpoint is refused (missing,
unfinished, truncated, or a checksum mismatch naming the file and the piece).
)";

int total_pieces(const LoadedCheckpoint& c) {
  int n = 0;
  for (const auto& s : c.shards) n += s.pieces;
  return n;
}

void print_index(const LoadedCheckpoint& c) {
  const CheckpointMeta& m = c.meta;
  std::printf("checkpoint: %s\n", c.path.c_str());
  std::printf("  step %lld, tokens seen %lld, data position %lld\n", (long long)m.step,
              (long long)m.tokens_seen, (long long)m.data_position);
  std::printf("  run id %s, library version %s\n", m.run_id.c_str(), m.library_version.c_str());
  std::printf("  layout %s\n", m.layout.dump().c_str());
  std::printf("shards (%zu):\n", c.shards.size());
  for (const auto& s : c.shards)
    std::printf("  rank %5d  %-16s %12lld bytes  %5d pieces  %s\n", s.rank, s.file.c_str(),
                (long long)s.bytes, s.pieces, s.checksum.c_str());
  std::printf("tensors (%zu):\n", c.tensors.size());
  for (const auto& t : c.tensors)
    std::printf("  %-36s %-14s %3d pieces  %12lld bytes\n", t.name.c_str(),
                ckpt::shape_string(t.shape).c_str(), t.pieces,
                (long long)(ckpt::numel(t.shape) * (int64_t)sizeof(float)));
}

}  // namespace

int cmd_ckpt(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  check(sub == "inspect" || sub == "verify",
        "tessera ckpt: expected the subcommand 'inspect' or 'verify' (tessera ckpt --help)");
  const std::string command = "ckpt " + sub;
  const ParsedArgs p = parse_args(Args(args.begin() + 1, args.end()), command, {"--no-verify"});
  if (p.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  bool verify = true;
  for (const auto& [flag, value] : p.options) {
    check(flag == "--no-verify" && sub == "inspect",
          "tessera " + command + ": unknown option " + flag + " (see tessera ckpt --help)");
    verify = false;
  }
  check(p.positional.size() == 1,
        "tessera " + command + ": expected one checkpoint directory (usage: tessera " + command +
            " DIR)");
  require_one_process(command);

  const LoadedCheckpoint c = load_checkpoint(p.positional[0], {});
  if (sub == "inspect") print_index(c);
  if (!verify) {
    std::printf("checksums: not verified (--no-verify)\n");
    return 0;
  }
  const int64_t bytes = verify_checkpoint(c.path);
  if (sub == "inspect") {
    std::printf("checksums: all %zu shards verified\n", c.shards.size());
  } else {
    std::printf("ok: %s: %zu shards, %d pieces, %.2f MiB verified\n", c.path.c_str(),
                c.shards.size(), total_pieces(c), (double)bytes / (1 << 20));
  }
  return 0;
}

}  // namespace tessera::cli
