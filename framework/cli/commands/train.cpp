// tessera train RECIPE [--set section.key=value ...]
#include <cstdio>

#include "framework/cli/commands/commands.h"
#include "framework/recipe/recipe.h"
#include "framework/train/trainer.h"
#include "base/error.h"

namespace tessera::cli {

static const char* kTrainUsage =
    "usage: tessera train RECIPE [--set section.key=value ...]\n"
    "\n"
    "Trains the model a YAML recipe describes (see docs/recipes.md). Each --set overrides\n"
    "one recipe key, e.g. --set train.steps=50 --set log.dir=/scratch/runs.\n"
    "Run under mpirun with parallel.dp ranks: mpirun -n 2 tessera train R --set parallel.dp=2\n";

int cmd_train(const Args& args) {
  std::string recipe_path;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kTrainUsage, stdout);
      return 0;
    } else if (a == "--set") {
      check(i + 1 < args.size(), "tessera train: --set needs a section.key=value argument");
      overrides.push_back(args[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      overrides.push_back(a.substr(6));
    } else if (a.rfind("-", 0) == 0) {
      throw Error("tessera train: unknown option '" + a + "' (see tessera train --help)");
    } else {
      check(recipe_path.empty(), "tessera train: more than one recipe given ('" + recipe_path +
                                     "' and '" + a + "')");
      recipe_path = a;
    }
  }
  check(!recipe_path.empty(), "tessera train: no recipe given (usage: tessera train RECIPE)");
  const Recipe recipe = load_recipe(recipe_path, overrides);
  TrainOptions options;
  options.argv = {"tessera", "train"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return train(recipe, options).preempted ? kPreemptedExitCode : 0;
}

}  // namespace tessera::cli
