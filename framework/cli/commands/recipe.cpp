// tessera recipe RECIPE [--set section.key=value ...] [--get section.key]
#include <cstdio>

#include "base/error.h"
#include "framework/cli/commands/commands.h"
#include "framework/recipe/recipe.h"

namespace tessera::cli {

static const char* kRecipeUsage =
    "usage: tessera recipe RECIPE [--set section.key=value ...] [--get section.key]\n"
    "\n"
    "The recipe as `tessera train` would run it: the file, then each --set, defaults filled\n"
    "in, every key checked. Prints it as YAML, or with --get the value of one key alone\n"
    "(e.g. --get train.device: the launchers read it so). Not an MPI program: it runs\n"
    "anywhere, also outside mpirun and srun.\n";

int cmd_recipe(const Args& args) {
  const ParsedArgs p = parse_args(args, "recipe");
  if (p.help) {
    std::fputs(kRecipeUsage, stdout);
    return 0;
  }
  std::vector<std::string> overrides;
  std::string key;
  for (const auto& [flag, value] : p.options) {
    if (flag == "--set")
      overrides.push_back(value);
    else if (flag == "--get")
      key = value;
    else
      throw Error("tessera recipe: unknown option '" + flag + "' (see tessera recipe --help)");
  }
  check(p.positional.size() == 1,
        "tessera recipe: expected one recipe file (usage: tessera recipe RECIPE [--set k=v ...] "
        "[--get section.key])");
  const Recipe recipe = load_recipe(p.positional[0], overrides);
  if (key.empty())
    std::fputs(recipe_to_yaml(recipe).c_str(), stdout);
  else
    std::printf("%s\n", recipe_value(recipe, key).c_str());
  return 0;
}

}  // namespace tessera::cli
