// Text from a checkpoint (`tessera generate`): the model a checkpoint's recipe describes,
// built in one process, its parameters read from a checkpoint of any layout, and a
// continuation of a prompt, greedy or sampled.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "framework/model/gpt_model.h"
#include "framework/recipe/recipe.h"

namespace tessera {

struct CheckpointModel {
  Recipe recipe;                 // from the checkpoint's /meta/recipe_yaml
  LoadedCheckpoint checkpoint;   // its index: path, metadata, tensors, shards
  std::unique_ptr<GPTModel> model;   // the whole model (tp = pp = 1), one sequence at a time
};

// Verifies every shard's checksums (verify_checkpoint), then builds the model of the
// checkpoint's recipe at (dp, tp, pp) = (1, 1, 1) on `device`'s backend
// (kernels::backend_for: the CPU, or the process's GPU) and reads its parameters (not the
// AdamW moments) through the index, whatever layout or device wrote them: into a host
// mirror of the model's memory, then uploaded (no copy on the CPU). `path` is a step
// directory or a directory holding `latest`. Throws tessera::Error naming the file and
// the fault, or the reason `device` cannot be used. Not collective.
CheckpointModel load_checkpoint_model(const std::string& path,
                                      kernels::Device device = kernels::Device::cpu);

struct SamplingOptions {
  int tokens = 64;           // how many tokens to add
  double temperature = 0;    // 0: greedy (argmax); > 0: sample from softmax(logits / T)
  uint64_t seed = 1337;      // for temperature > 0: the same seed gives the same tokens
};

// `prompt` (at least one token, ids < vocab_size) followed by o.tokens more: each the
// argmax over the real vocabulary of the logits after the last position (lowest id on
// ties), or a sample from softmax(logits / temperature) over the real vocabulary drawn
// with the counter-based RNG keyed by the seed. The model sees the last seq_len tokens.
// A single-process model (tp = pp = 1), on any backend: the logits are read through
// backend().host_view (one row per token).
std::vector<int32_t> continue_tokens(GPTModel& model, std::vector<int32_t> prompt,
                                     const SamplingOptions& o);

// The logits of one forward pass over `tokens` (at most seq_len of them, ids < vocab_size):
// [T, vocab_size] row-major, row t the scores of the token after tokens[0..t]. For checking
// an exported model against this one.
std::vector<float> prompt_logits(GPTModel& model, const std::vector<int32_t>& tokens);

}  // namespace tessera
