// `tessera lora merge`: a LoRA checkpoint (adapters + a reference to its base) folded
// into one full checkpoint of the base model's shape, W' = W + (alpha / r) B @ A for
// every adapted layer. The result holds parameters only (no AdamW state): a model to
// generate from, export, or fine-tune again as a lora.base.
#pragma once
#include <string>

namespace tessera {

// Reads `lora_checkpoint` (a step directory or a directory with `latest`) and its base,
// both verified, merges in one process, and writes `out_dir`/step_XXXXXX (same step)
// with `latest`, atomically as every checkpoint. The recorded recipe is the LoRA run's
// with lora.rank 0. Returns the step directory written. Not collective; throws
// tessera::Error naming the file at fault.
std::string merge_lora_checkpoint(const std::string& lora_checkpoint, const std::string& out_dir);

}  // namespace tessera
