// Recipes as files: the resolved-recipe YAML round trip, the shipped recipes, and the key
// reference in docs/recipes.md, which must match the table the parser uses.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "framework/recipe/recipe.h"

namespace tessera {
namespace {

const std::string kSourceDir = TESSERA_SOURCE_DIR;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(RecipeYaml, RoundTripsEveryField) {
  // Values that are easy to get wrong when written back: strings that YAML would read
  // as other types or as syntax, doubles without a short decimal form, large integers.
  const Recipe original = parse_recipe(
      "data:\n  train: data/*.bin\ncheckpoint:\n  dir: 'my ckpt: #1'\n", "original.yaml",
      {"data.val=no", "checkpoint.resume=123",
       "log.dir=*runs", "optim.lr=0.30000000000000004", "optim.min_lr=1e-300",
       "optim.eps=1e-8", "optim.grad_clip=0", "train.seed=18446744073709551615",
       "train.steps=9000000000", "optim.decay_embeddings=true", "checkpoint.async=on",
       "parallel.bucket_mb=0.5", "parallel.schedule=gpipe", "model.vocab_size=65536"});
  const std::string yaml = recipe_to_yaml(original);

  Recipe again = parse_recipe(yaml, "again.yaml");
  EXPECT_EQ(again.source, "again.yaml");
  EXPECT_EQ(again.data.val, "no");
  EXPECT_EQ(again.checkpoint.dir, "my ckpt: #1");
  EXPECT_EQ(again.checkpoint.resume, "123");
  EXPECT_EQ(again.log.dir, "*runs");
  EXPECT_EQ(again.optim.lr, 0.30000000000000004);  // bit-exact, not approximately
  EXPECT_EQ(again.optim.min_lr, 1e-300);
  EXPECT_EQ(again.train.seed, 18446744073709551615u);
  EXPECT_EQ(again.train.steps, 9000000000);
  EXPECT_TRUE(again.optim.decay_embeddings);
  EXPECT_TRUE(again.checkpoint.async);
  // recipe_to_yaml writes every field exactly, so equal text means equal recipes.
  again.source = original.source;
  EXPECT_EQ(recipe_to_yaml(again), yaml);
}

TEST(RecipeYaml, WritesEverySection) {
  Recipe r;
  const std::string yaml = recipe_to_yaml(r);
  for (const char* key : {"\nmodel:", "\n  n_embd: 64", "\ndata:", "\ntrain:", "\n  seed: 1337",
                          "\noptim:", "\nparallel:", "\ncheckpoint:", "\n  resume: \"none\"",
                          "\nlog:", "\n  tensorboard: false"})
    EXPECT_NE(yaml.find(key), std::string::npos) << key << " missing from\n" << yaml;
}

TEST(RecipeFiles, Gpt2SmallLoads) {
  const Recipe r = load_recipe(kSourceDir + "/recipes/gpt2-124m.yaml");
  EXPECT_EQ(r.model.family, "gpt2");
  EXPECT_EQ(r.model.n_layer, 12);
  EXPECT_EQ(r.model.n_head, 12);
  EXPECT_EQ(r.model.n_embd, 768);
  EXPECT_EQ(r.model.vocab_size, 50257);
  EXPECT_EQ(r.model.vocab_pad_to, 128);
  EXPECT_EQ(r.model.seq_len, 1024);
  EXPECT_EQ(r.data.train, "data/gpt2/train_*.bin");
  EXPECT_EQ(r.data.val, "data/gpt2/val_*.bin");
  EXPECT_EQ(r.train.global_batch, 512);
  EXPECT_EQ(r.train.micro_batch, 4);
  EXPECT_DOUBLE_EQ(r.optim.lr, 6e-4);
  EXPECT_DOUBLE_EQ(r.optim.min_lr, 6e-5);
  EXPECT_EQ(r.optim.warmup_steps, 700);
  EXPECT_DOUBLE_EQ(r.optim.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(r.optim.beta1, 0.9);
  EXPECT_DOUBLE_EQ(r.optim.beta2, 0.95);
  EXPECT_DOUBLE_EQ(r.optim.grad_clip, 1.0);
  // The job scripts scale it out with --set.
  EXPECT_EQ(load_recipe(kSourceDir + "/recipes/gpt2-124m.yaml",
                        {"parallel.dp=8", "train.micro_batch=16"})
                .parallel.dp,
            8);
}

// docs/recipes.md holds the output of recipe_reference_markdown() between these markers.
// After changing the table, regenerate it with
//   TESSERA_UPDATE_DOCS=1 build/bin/unit_tests --gtest_filter=RecipeDocs.*
const std::string kBegin = "<!-- BEGIN recipe_reference_markdown() -->\n";
const std::string kEnd = "<!-- END recipe_reference_markdown() -->";

TEST(RecipeDocs, KeyReferenceMatchesTheTable) {
  const std::string path = kSourceDir + "/docs/recipes.md";
  std::string doc = read_text(path);
  const size_t begin = doc.find(kBegin), end = doc.find(kEnd);
  ASSERT_NE(begin, std::string::npos) << path << " lacks the line " << kBegin;
  ASSERT_NE(end, std::string::npos) << path << " lacks the line " << kEnd;
  ASSERT_LT(begin, end);
  const size_t body = begin + kBegin.size();
  const std::string generated = recipe_reference_markdown();

  const char* update = std::getenv("TESSERA_UPDATE_DOCS");
  if (update && std::string(update) == "1") {
    doc.replace(body, end - body, generated);
    std::ofstream(path) << doc;
    GTEST_SKIP() << "rewrote the key reference in " << path;
  }
  EXPECT_EQ(doc.substr(body, end - body), generated)
      << path << " is stale; regenerate it with\n  TESSERA_UPDATE_DOCS=1 "
      << "build/bin/unit_tests --gtest_filter=RecipeDocs.*";
}

}  // namespace
}  // namespace tessera
