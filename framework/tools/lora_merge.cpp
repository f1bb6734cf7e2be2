#include "framework/tools/lora_merge.h"

#include "base/error.h"
#include "checkpoint/checkpoint.h"
#include "framework/tools/generate.h"
#include "framework/train/checkpointing.h"
#include "framework/util/system_info.h"

namespace tessera {

std::string merge_lora_checkpoint(const std::string& lora_checkpoint, const std::string& out_dir) {
  CheckpointModel loaded = load_checkpoint_model(lora_checkpoint);
  GPTModel& model = *loaded.model;
  check(model.has_lora(), loaded.checkpoint.path + " is not a LoRA checkpoint (lora.rank is 0)");
  model.merge_lora();

  Recipe merged = loaded.recipe;
  merged.lora.rank = 0;
  merged.lora.base.clear();
  CheckpointMeta meta = loaded.checkpoint.meta;
  meta.recipe_yaml = recipe_to_yaml(merged);
  meta.layout = {{"dp", 1}, {"tp", 1}, {"pp", 1}, {"zero", 0}, {"world", 1}};
  meta.library_version = kTesseraVersion;
  meta.extra = {{"merged_from", {{"path", loaded.checkpoint.path},
                                 {"fingerprint", checkpoint_fingerprint(loaded.checkpoint)}}},
                {"lora_base", loaded.checkpoint.meta.extra.value("lora_base", nlohmann::json())}};
  std::vector<TensorPiece> pieces;
  for (const ParamInfo& p : model.base_table().params()) {
    const std::vector<int64_t> origin(p.shape.size(), 0);
    pieces.push_back({p.name, p.shape, origin, p.shape, model.base_params() + p.offset});
  }
  return save_checkpoint(out_dir, meta, pieces, /*keep_last=*/0);
}

}  // namespace tessera
