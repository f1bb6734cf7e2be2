// Recipes: parsing, overrides and every class of user error. Each error must be one line
// that starts with the file it came from and names the key and what was expected.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/recipe/recipe.h"
#include "base/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// The smallest valid recipe: everything else keeps its default.
const std::string kMinimal = "data:\n  train: data/tiny/train_*.bin\n";

// Runs `f`, which must throw tessera::Error; returns the message after checking the
// properties every recipe error has: one line, starting with the source it names.
template <class F>
std::string error_of(F f, const std::string& source) {
  try {
    f();
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_EQ(message.rfind(source, 0), 0u) << "does not start with " << source << ": "
                                            << message;
    return message;
  }
  ADD_FAILURE() << "expected a tessera::Error from " << source;
  return "";
}

// The error for recipe text `yaml` (named recipes/tiny.yaml) with overrides.
std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_recipe(yaml, "recipes/tiny.yaml", overrides); },
                  "recipes/tiny.yaml");
}

// The error for kMinimal plus one section `section:\n  line`.
std::string key_error(const std::string& section, const std::string& line) {
  return parse_error(kMinimal + section + ":\n  " + line + "\n");
}

Recipe with_overrides(const std::vector<std::string>& overrides) {
  return parse_recipe(kMinimal, "recipes/tiny.yaml", overrides);
}

// gmock's HasSubstr as a plain gtest assertion, so the tests need only gtest.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "'\n  does not contain '" << part << "'";
}

// One faulty line in a section added to kMinimal (see key_error), and part of its error.
struct KeyFault {
  std::string section, line, says;
};
void expect_key_errors(const std::vector<KeyFault>& faults) {
  for (const auto& f : faults) EXPECT_TRUE(Contains(key_error(f.section, f.line), f.says));
}

// Overrides of kMinimal that together are refused, and part of the error.
struct OverrideFault {
  std::vector<std::string> sets;
  std::string says;
};
void expect_override_errors(const std::vector<OverrideFault>& faults) {
  for (const auto& f : faults) EXPECT_TRUE(Contains(parse_error(kMinimal, f.sets), f.says));
}

// ---------------------------------------------------------------------------------------
// Good input.

TEST(Recipe, GoodFileParses) {
  const fs::path dir = fs::temp_directory_path() / ("tessera_recipe_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path path = dir / "good.yaml";
  std::ofstream(path) << "# a comment\n"
                         "model:\n  n_layer: 4\n  n_head: 4\n  n_embd: 128\n"
                         "  vocab_size: 50257\n  vocab_pad_to: 128\n  seq_len: 256\n"
                         "data:\n  train: data/x/train_*.bin\n  val: data/x/val.bin\n"
                         "train:\n  steps: 20\n  global_batch: 16\n  micro_batch: 2\n"
                         "  seed: 7\n  eval_every: 5\n"
                         "optim:\n  lr: 3e-4\n  min_lr: 0\n  warmup_steps: 10\n"
                         "  decay_embeddings: yes\n"
                         "parallel:\n  dp: 2\n  schedule: gpipe\n  bucket_mb: 1.5\n"
                         "checkpoint:\n  dir: out/ckpt\n  resume: auto\n  async: true\n"
                         "log:\n  tensorboard: false\n";
  const Recipe r = load_recipe(path.string());
  EXPECT_EQ(r.source, path.string());
  EXPECT_EQ(r.model.n_layer, 4);
  EXPECT_EQ(r.model.vocab_size, 50257);
  EXPECT_EQ(r.model.vocab_pad_to, 128);
  EXPECT_EQ(r.model.seq_len, 256);
  EXPECT_EQ(r.data.train, "data/x/train_*.bin");
  EXPECT_EQ(r.data.val, "data/x/val.bin");
  EXPECT_EQ(r.train.steps, 20);
  EXPECT_EQ(r.train.global_batch, 16);
  EXPECT_EQ(r.train.seed, 7u);
  EXPECT_DOUBLE_EQ(r.optim.lr, 3e-4);
  EXPECT_DOUBLE_EQ(r.optim.min_lr, 0.0);
  EXPECT_TRUE(r.optim.decay_embeddings);
  EXPECT_EQ(r.parallel.dp, 2);
  EXPECT_STREQ(to_string(r.parallel.schedule), "gpipe");
  EXPECT_DOUBLE_EQ(r.parallel.bucket_mb, 1.5);
  EXPECT_EQ(r.checkpoint.resume, "auto");
  EXPECT_TRUE(r.checkpoint.async);
  EXPECT_FALSE(r.log.tensorboard);
  EXPECT_STREQ(to_string(r.train.precision), "fp32");  // not in the file: default
  fs::remove_all(dir);
}

TEST(Recipe, EmptyTextGivesDefaults) {
  // Defaults alone are not runnable: there is no training data.
  EXPECT_TRUE(Contains(error_of([] { parse_recipe("", "empty.yaml"); }, "empty.yaml"),
              "data.train is empty"));
  // With data, every other field is the struct's default; empty sections are fine too.
  const Recipe r = parse_recipe("# nothing\nlog:\n", "empty.yaml", {"data.train=a.bin"});
  Recipe expected;
  expected.source = "empty.yaml";
  expected.data.train = "a.bin";
  EXPECT_EQ(recipe_to_yaml(r), recipe_to_yaml(expected));
}

// ---------------------------------------------------------------------------------------
// Faults in the file.

TEST(RecipeErrors, MissingFile) {
  EXPECT_EQ(error_of([] { load_recipe("recipes/x.yaml"); }, "recipes/x.yaml"),
            "recipes/x.yaml: cannot open recipe file (No such file or directory)");
}

TEST(RecipeErrors, MalformedYamlNamesLine) {
  const std::string m = parse_error("model:\n  n_layer: 2\n  n_head: [1, 2\n");
  EXPECT_TRUE(Contains(m, "recipes/tiny.yaml:4:1: malformed YAML"));
  const std::string bad_indent = parse_error("model:\n  n_layer: 2\n n_head: 2\n");
  EXPECT_TRUE(Contains(bad_indent, "recipes/tiny.yaml:3:"));
  EXPECT_TRUE(Contains(bad_indent, "malformed YAML"));
}

TEST(RecipeErrors, UnknownKeySuggestsClosest) {
  EXPECT_EQ(key_error("train", "stepz: 10"),
            "recipes/tiny.yaml:4:3: unknown key 'train.stepz' (known keys in train: steps, exit_after_step, "
            "global_batch, micro_batch, device, precision, stochastic_rounding, loss_scale, "
            "loss_scale_window, seed, eval_every, eval_batches, "
            "sample_tokens); did you mean 'steps'?");
  // A key of another section points there.
  EXPECT_TRUE(Contains(key_error("train", "lr: 1e-3"), "did you mean 'optim.lr'?"));
  // Nothing close: no guess.
  EXPECT_FALSE(Contains(key_error("train", "banana: 1"), "did you mean"));
}

TEST(RecipeErrors, UnknownSection) {
  const std::string m = parse_error(kMinimal + "trian:\n  steps: 3\n");
  EXPECT_TRUE(Contains(m, "recipes/tiny.yaml:3:1: unknown section 'trian' (known sections: "
                           "model, data, train"));
  EXPECT_TRUE(Contains(m, "did you mean 'train'?"));
  // A key written without its section.
  EXPECT_TRUE(Contains(parse_error(kMinimal + "steps: 3\n"), "did you mean 'train.steps'?"));
  // A section that is not a mapping; a top level that is not a mapping.
  EXPECT_TRUE(Contains(parse_error(kMinimal + "train: 5\n"),
              "recipes/tiny.yaml:3:8: train: expected a mapping of keys"));
  EXPECT_TRUE(Contains(parse_error("- model\n"), "expected a mapping of sections"));
}

TEST(RecipeErrors, WrongType) {
  EXPECT_EQ(key_error("train", "steps: ten"),
            "recipes/tiny.yaml:4:10: train.steps: expected an integer >= 1, got 'ten'");
  expect_key_errors({
      {"train", "steps: 2.5", "expected an integer >= 1, got '2.5'"},
      {"optim", "lr: fast", "optim.lr: expected a number > 0, got 'fast'"},
      {"log", "tensorboard: maybe", "log.tensorboard: expected true or false, got 'maybe'"},
      {"train", "steps: [1, 2]", "train.steps: expected an integer >= 1, got a list"},
      {"train", "steps:",
       "recipes/tiny.yaml:4:3: train.steps: expected an integer >= 1, got nothing"},
      {"train", "seed: -1", "train.seed: expected an integer >= 0, got '-1'"},
  });
}

TEST(RecipeErrors, OutOfRange) {
  EXPECT_EQ(key_error("train", "steps: 0"),
            "recipes/tiny.yaml:4:10: train.steps: expected an integer >= 1, got 0");
  expect_key_errors({
      {"model", "vocab_size: 70000",
       "model.vocab_size: expected an integer from 1 to 65536, got 70000"},
      {"optim", "beta2: 1", "optim.beta2: expected a number >= 0 and < 1, got 1"},
      {"optim", "lr: 0", "optim.lr: expected a number > 0, got 0"},
      {"train", "micro_batch: 3000000000", "got 3000000000 (does not fit in a 32-bit integer)"},
  });
}

TEST(RecipeErrors, BadEnumeration) {
  expect_key_errors({
      {"train", "precision: fp8",
       "recipes/tiny.yaml:4:14: train.precision: expected one of 'fp32', 'bf16', 'fp16', "
       "got 'fp8'"},
      {"parallel", "schedule: 1f1c",
       "parallel.schedule: expected one of 'gpipe', '1f1b', got '1f1c'; did you mean '1f1b'?"},
      {"parallel", "zero: 2", "parallel.zero: expected an integer from 0 to 1, got 2"},
      {"checkpoint", "resume: ''", "checkpoint.resume: expected one of 'none', 'auto' or a path"},
  });
  // Anything else non-empty is a checkpoint path.
  EXPECT_EQ(with_overrides({"checkpoint.resume=ckpt/step_000200"}).checkpoint.resume,
            "ckpt/step_000200");
}

TEST(RecipeErrors, DuplicateKey) {
  EXPECT_TRUE(Contains(key_error("train", "steps: 3\n  steps: 4"),
              "recipes/tiny.yaml:5:3: duplicate key 'train.steps' (first at line 4)"));
}

// ---------------------------------------------------------------------------------------
// Cross-field checks and features that are not implemented yet.

TEST(RecipeValidation, CrossFieldConstraints) {
  EXPECT_EQ(parse_error(kMinimal, {"train.global_batch=10", "parallel.dp=2"}),
            "recipes/tiny.yaml: train.global_batch 10 is not divisible by parallel.dp * "
            "train.micro_batch = 8 (2 * 4)");
  expect_override_errors({
      {{"model.n_embd=100", "model.n_head=3"},
       "model.n_embd 100 is not divisible by model.n_head 3"},
      {{"optim.min_lr=1e-3"}, "optim.min_lr 0.001 is larger than optim.lr"},
      {{"optim.warmup_steps=200"}, "optim.warmup_steps 200 is larger than train.steps 100"},
  });
  EXPECT_TRUE(Contains(parse_error("train:\n  steps: 5\n"), "data.train is empty"));
}

TEST(RecipeValidation, GradReduce) {
  EXPECT_STREQ(to_string(parse_recipe(kMinimal, "recipes/tiny.yaml").parallel.grad_reduce), "fp32");
  EXPECT_STREQ(to_string(parse_recipe(kMinimal, "recipes/tiny.yaml", {"parallel.grad_reduce=bf16"})
                             .parallel.grad_reduce),
               "bf16");
  EXPECT_TRUE(Contains(parse_error(kMinimal, {"parallel.grad_reduce=fp16"}), "parallel.grad_reduce"));
  EXPECT_EQ(parse_error(kMinimal, {"parallel.grad_reduce=bf16", "parallel.zero=1"}),
            "recipes/tiny.yaml: parallel.grad_reduce bf16 is not supported with parallel.zero 1 "
            "(ZeRO-1 reduce-scatters in fp32): set parallel.grad_reduce=fp32 or parallel.zero=0");
}

// parallel.backend: auto resolves by train.device; nccl needs GPU memory.
TEST(RecipeValidation, CommBackend) {
  const Recipe defaults = parse_recipe(kMinimal, "recipes/tiny.yaml");
  EXPECT_STREQ(to_string(defaults.parallel.backend), "auto");
  EXPECT_EQ(resolved_backend(defaults.parallel, Device::cpu), CommBackend::mpi);
  EXPECT_EQ(resolved_backend(defaults.parallel, Device::cuda), CommBackend::nccl);
  const Recipe mpi = parse_recipe(kMinimal, "recipes/tiny.yaml", {"parallel.backend=mpi"});
  EXPECT_EQ(resolved_backend(mpi.parallel, Device::cuda), CommBackend::mpi);
  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml",
                         {"parallel.backend=nccl", "train.device=cuda"}).parallel.backend,
            CommBackend::nccl);
  EXPECT_TRUE(Contains(parse_error(kMinimal, {"parallel.backend=gloo"}), "parallel.backend"));
  EXPECT_EQ(parse_error(kMinimal, {"parallel.backend=nccl"}),
            "recipes/tiny.yaml: parallel.backend nccl runs the collectives on GPU memory: it "
            "needs train.device cuda, not cpu");
}

// kernels.attention: auto by default; cudnn only where cuDNN's attention can run.
TEST(RecipeValidation, AttentionEngine) {
  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml").kernels.attention, AttentionEngine::auto_);
  for (AttentionEngine e : {AttentionEngine::auto_, AttentionEngine::own, AttentionEngine::cudnn}) {
    AttentionEngine back = AttentionEngine::auto_;
    EXPECT_TRUE(from_string(to_string(e), back)) << to_string(e);
    EXPECT_EQ(back, e) << to_string(e);
  }
  EXPECT_STREQ(to_string(AttentionEngine::cudnn), "cudnn");
  EXPECT_STREQ(to_string(AttentionEngine::own), "own");
  EXPECT_STREQ(to_string(AttentionEngine::auto_), "auto");
  AttentionEngine unchanged = AttentionEngine::own;
  EXPECT_FALSE(from_string("flash", unchanged));
  EXPECT_EQ(unchanged, AttentionEngine::own);

  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml",
                         {"kernels.attention=cudnn", "train.device=cuda", "train.precision=bf16"})
                .kernels.attention,
            AttentionEngine::cudnn);
  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml", {"kernels.attention=own"})
                .kernels.attention,
            AttentionEngine::own);
  EXPECT_EQ(parse_error(kMinimal, {"kernels.attention=cudn"}),
            "recipes/tiny.yaml: --set kernels.attention: expected one of 'auto', 'own', "
            "'cudnn', got 'cudn'; did you mean 'cudnn'?");
  expect_override_errors({
      {{"kernels.attention=cudnn", "train.precision=bf16"},
       "recipes/tiny.yaml: kernels.attention cudnn needs train.device cuda, not cpu (cuDNN "
       "runs on GPUs)"},
      {{"kernels.attention=cudnn", "train.device=cuda"},
       "recipes/tiny.yaml: kernels.attention cudnn needs train.precision bf16, not fp32 "
       "(cuDNN's attention and our flash kernel, its fallback, compute in bf16)"},
      {{"kernels.attention=cudnn", "train.device=cuda", "train.precision=bf16",
        "model.family=llama"},
       "recipes/tiny.yaml: kernels.attention cudnn needs model.family gpt2, not llama "
       "(llama's grouped-query attention has our own kernel only)"},
  });
}

TEST(RecipeValidation, TensorBoardIsABoolean) {
  EXPECT_TRUE(parse_recipe(kMinimal, "recipes/tiny.yaml", {"log.tensorboard=true"}).log.tensorboard);
  EXPECT_FALSE(parse_recipe(kMinimal, "recipes/tiny.yaml", {"log.tensorboard=false"})
                   .log.tensorboard);
}

TEST(RecipeValidation, PrecisionAndLora) {
  EXPECT_STREQ(
      to_string(parse_recipe(kMinimal, "recipes/tiny.yaml", {"train.precision=bf16"}).train.precision),
      "bf16");
  EXPECT_EQ(parse_error(kMinimal, {"train.stochastic_rounding=true"}),
            "recipes/tiny.yaml: train.stochastic_rounding is for train.precision bf16, not fp32");
  EXPECT_EQ(parse_error(kMinimal, {"lora.rank=8"}),
            "recipes/tiny.yaml: lora.base is empty: a LoRA run (lora.rank 8) fine-tunes a base "
            "model; set it to that model's checkpoint");
  EXPECT_EQ(parse_error(kMinimal, {"lora.rank=8", "lora.base=ckpt", "lora.targets=qkv,fc"}),
            "recipes/tiny.yaml: lora.targets: unknown layer 'fc' of a gpt2 model (expected all, "
            "or a comma-separated list of qkv, attn_out, mlp_up, mlp_down)");
  EXPECT_EQ(parse_error(kMinimal, {"lora.rank=8", "lora.base=ckpt", "lora.targets=qkv, qkv"}),
            "recipes/tiny.yaml: lora.targets: 'qkv' is listed twice");
  const Recipe lora = parse_recipe(kMinimal, "recipes/tiny.yaml",
                                   {"lora.rank=8", "lora.base=ckpt", "lora.targets= mlp_up,qkv"});
  EXPECT_EQ(lora_targets(lora), (std::vector<std::string>{"mlp_up", "qkv"}));
  // ZeRO-1 and pipeline parallelism are implemented: accepted.
  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml", {"parallel.zero=1"}).parallel.zero, 1);
  EXPECT_EQ(parse_recipe(kMinimal, "recipes/tiny.yaml", {"parallel.pp=2"}).parallel.pp, 2);
}

TEST(RecipeValidation, StageLayers) {
  const Recipe balanced = parse_recipe(kMinimal, "recipes/tiny.yaml",
                                       {"model.n_layer=5", "parallel.pp=2"});
  EXPECT_EQ(pipeline_stage_layers(balanced), (std::vector<int>{3, 2}));
  const Recipe listed = parse_recipe(kMinimal, "recipes/tiny.yaml",
                                     {"model.n_layer=5", "parallel.pp=2", "parallel.stage_layers=1,4"});
  EXPECT_EQ(pipeline_stage_layers(listed), (std::vector<int>{1, 4}));
  expect_override_errors({
      {{"model.n_layer=5", "parallel.pp=2", "parallel.stage_layers=1;4"},
       "recipes/tiny.yaml: parallel.stage_layers: expected layer counts separated by commas, "
       "such as '3,1', got '1;4'"},
      {{"model.n_layer=5", "parallel.pp=2", "parallel.stage_layers=2,2"},
       "recipes/tiny.yaml: parallel.stage_layers: '2,2' must list parallel.pp = 2 layer counts, "
       "each >= 1, summing to model.n_layer = 5"},
      {{"model.n_layer=5", "parallel.pp=2", "parallel.stage_layers=5,"},
       "expected layer counts separated by commas"},
  });
}

TEST(RecipeValidation, RecipeBuiltInCodeIsCheckedKeyByKey) {
  Recipe r;
  r.source = "test";
  r.data.train = "a.bin";
  EXPECT_NO_THROW(validate_recipe(r));
  r.train.micro_batch = 0;
  EXPECT_EQ(error_of([&] { validate_recipe(r); }, "test"),
            "test: train.micro_batch: expected an integer >= 1, got 0");
}

// ---------------------------------------------------------------------------------------
// --set overrides.

TEST(RecipeOverrides, ValuesAreYamlScalars) {
  const Recipe r = with_overrides({"train.steps=20", "optim.lr=3e-4", "data.train=data/*.bin",
                                   "checkpoint.async=true", "data.val=*.bin"});
  EXPECT_EQ(r.train.steps, 20);
  EXPECT_DOUBLE_EQ(r.optim.lr, 3e-4);
  EXPECT_EQ(r.data.train, "data/*.bin");
  EXPECT_TRUE(r.checkpoint.async);
  // `*.bin` is not valid YAML on its own (an alias); it is taken literally.
  EXPECT_EQ(r.data.val, "*.bin");
}

TEST(RecipeOverrides, AppliedInOrderAfterTheFile) {
  const std::string yaml = kMinimal + "train:\n  steps: 5\n";
  EXPECT_EQ(parse_recipe(yaml, "f.yaml").train.steps, 5);
  EXPECT_EQ(parse_recipe(yaml, "f.yaml", {"train.steps=7"}).train.steps, 7);
  EXPECT_EQ(parse_recipe(yaml, "f.yaml", {"train.steps=7", "train.steps=9"}).train.steps, 9);
  // Validation sees the final values: only the pair together is valid.
  EXPECT_EQ(with_overrides({"optim.warmup_steps=200", "train.steps=300"}).optim.warmup_steps,
            200);
  // An empty value clears a string.
  EXPECT_EQ(with_overrides({"data.val=x.bin", "data.val="}).data.val, "");
}

TEST(RecipeOverrides, Errors) {
  EXPECT_EQ(parse_error(kMinimal, {"train.steps=0"}),
            "recipes/tiny.yaml: --set train.steps: expected an integer >= 1, got 0");
  expect_override_errors({
      {{"train.steps=ten"}, "--set train.steps: expected an integer >= 1, got 'ten'"},
      {{"train.precision=fp9"}, "--set train.precision: expected one of 'fp32', 'bf16', 'fp16'"},
      {{"train.stepz=5"}, "--set train.stepz: unknown key 'train.stepz' (known keys in train: "},
      {{"train.stepz=5"}, "did you mean 'steps'?"},
      {{"trian.steps=5"}, "--set trian.steps: unknown section 'trian'"},
      {{"steps=5"}, "--set steps: expected section.key=value"},
      {{"train.steps"}, "--set 'train.steps': missing '=' (expected section.key=value"},
      {{"data.val=[a, b]"}, "--set data.val: expected a string, got a list"},
  });
}

}  // namespace
}  // namespace tessera
