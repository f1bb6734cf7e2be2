// `tessera recipe`: the resolved recipe, or one key's value, as `tessera train` would read
// it. The launchers take train.device from it (launchers/*/train.*), so its answer must
// follow the same rules as training: the file, then each --set in order, then defaults.
#include <gtest/gtest.h>

#include <string>

#include "tests/e2e/tessera_process.h"
#include "tests/unit/test_support.h"

using namespace tessera::test_support;

namespace {

struct RecipeFile : ScratchDir {
  const std::string path = dir + "/recipe.yaml";
  RecipeFile(const std::string& name, const std::string& train_section)
      : ScratchDir("cli_recipe_" + name) {
    write_text(path, tiny_model_yaml() + "data:\n  train: " + dir + "/train_*.bin\n" +
                                  train_section);
  }
};

std::string value_of(const std::vector<std::string>& args) {
  const ProcessResult r = run_tessera(args);
  EXPECT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  return r.out;
}

TEST(CliRecipe, GetsTheDeviceFromTheFileThenEachSetThenTheDefault) {
  const RecipeFile absent("absent", "train:\n  steps: 3\n");
  EXPECT_EQ(value_of({"recipe", absent.path, "--get", "train.device"}), "cpu\n");
  const RecipeFile block("block", "train:\n  device: cuda  # a comment\n");
  EXPECT_EQ(value_of({"recipe", block.path, "--get", "train.device"}), "cuda\n");
  const RecipeFile flow("flow", "train: {steps: 3, device: \"cuda\"}\n");
  EXPECT_EQ(value_of({"recipe", flow.path, "--get", "train.device"}), "cuda\n");
  // --set after the file, the last one winning, in either spelling.
  EXPECT_EQ(value_of({"recipe", block.path, "--set", "train.device=cpu", "--get",
                      "train.device"}),
            "cpu\n");
  EXPECT_EQ(value_of({"recipe", absent.path, "--set=train.device=cpu", "--set",
                      "train.device=cuda", "--get", "train.device"}),
            "cuda\n");
  EXPECT_EQ(value_of({"recipe", absent.path, "--get", "train.steps"}), "3\n");
}

TEST(CliRecipe, PrintsTheResolvedRecipe) {
  const RecipeFile f("print", "train:\n  steps: 7\n");
  const std::string yaml = value_of({"recipe", f.path, "--set", "optim.lr=0.001"});
  EXPECT_NE(yaml.find("steps: 7"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("lr: 0.001"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("device: \"cpu\""), std::string::npos) << yaml;  // a default
}

TEST(CliRecipe, BadKeysAndRecipesAreOneLineErrors) {
  const RecipeFile f("bad", "train:\n  steps: 3\n");
  ProcessResult r = run_tessera({"recipe", f.path, "--get", "train.devise"});
  EXPECT_TRUE(one_error_line(r, {"no recipe key 'train.devise'", "did you mean 'device'"}));
  EXPECT_EQ(r.exit_code, 2);
  r = run_tessera({"recipe", f.path, "--set", "train.device=tpu", "--get", "train.device"});
  EXPECT_TRUE(one_error_line(r, {"train.device", "tpu"}));
  r = run_tessera({"recipe", f.dir + "/missing.yaml", "--get", "train.device"});
  EXPECT_TRUE(one_error_line(r, {"missing.yaml", "cannot open recipe file"}));
}

}  // namespace
