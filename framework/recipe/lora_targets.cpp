// lora_targets apart from recipe.cpp: the model calls it (ModelOptions::from_recipe), and
// this file uses no YAML, so that a binary with the model but no recipe parsing
// (gpu_training_check, carried to a GPU machine without yaml-cpp) links without it.
#include <algorithm>
#include <sstream>

#include "base/error.h"
#include "framework/recipe/recipe.h"

namespace tessera {

std::vector<std::string> lora_targets(const Recipe& r) {
  const bool llama = r.model.family == "llama";
  const std::vector<std::string> known =
      llama ? std::vector<std::string>{"q", "k", "v", "attn_out", "mlp_gate", "mlp_up", "mlp_down"}
            : std::vector<std::string>{"qkv", "attn_out", "mlp_up", "mlp_down"};
  if (r.lora.targets == "all") return known;
  std::string expected;
  for (const std::string& k : known) expected += (expected.empty() ? "" : ", ") + k;
  std::vector<std::string> out;
  std::stringstream list(r.lora.targets);
  for (std::string item; std::getline(list, item, ',');) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (std::find(known.begin(), known.end(), item) == known.end())
      throw Error(r.source + ": lora.targets: unknown layer '" + item + "' of a " +
                  r.model.family + " model (expected all, or a comma-separated list of " +
                  expected + ")");
    if (std::find(out.begin(), out.end(), item) != out.end())
      throw Error(r.source + ": lora.targets: '" + item + "' is listed twice");
    out.push_back(item);
  }
  if (out.empty()) throw Error(r.source + ": lora.targets: no layer listed");
  return out;
}

}  // namespace tessera
