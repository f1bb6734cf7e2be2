// lora_targets apart from recipe.cpp: the model calls it (ModelOptions::from_recipe), and
// this file uses no YAML, so that a binary with the model but no recipe parsing
// (gpu_training_check, carried to a GPU machine without yaml-cpp) links without it.
#include <algorithm>
#include <sstream>

#include "base/error.h"
#include "framework/recipe/recipe.h"

namespace tessera {

std::vector<std::string> lora_targets(const Recipe& r) {
  static const std::vector<std::string> known = {"qkv", "attn_out", "mlp_up", "mlp_down"};
  std::vector<std::string> out;
  std::stringstream list(r.lora.targets);
  for (std::string item; std::getline(list, item, ',');) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (std::find(known.begin(), known.end(), item) == known.end())
      throw Error(r.source + ": lora.targets: unknown layer '" + item +
                  "' (expected a comma-separated list of qkv, attn_out, mlp_up, mlp_down)");
    if (std::find(out.begin(), out.end(), item) != out.end())
      throw Error(r.source + ": lora.targets: '" + item + "' is listed twice");
    out.push_back(item);
  }
  if (out.empty()) throw Error(r.source + ": lora.targets: no layer listed");
  return out;
}

}  // namespace tessera
