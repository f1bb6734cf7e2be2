// `tessera generate --device` and `tessera bench --device`, through the real binaries: the
// CUDA side on `tessera_emulated_gpu` (the same command line, whose cuda backend runs the
// GPU kernels' source on the CPU emulator), against the CPU's `tessera`. A checkpoint that
// `tessera train` wrote on the CPU continues a prompt with the same tokens on either
// device (greedy and sampled, and a LoRA run's adapters over its base); bench reports on
// cuda and says so; an unknown device is refused, and the real binary on a machine
// without a GPU says so in one line. The models are tiny: the emulator is about 50x slower
// than the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/e2e/tessera_process.h"

using namespace tessera::test_support;  // tests/e2e/tessera_process.h

namespace {

// `tessera_emulated_gpu ARGS...`.
ProcessResult run_emulated_gpu(const std::vector<std::string>& args, double timeout_s = 120) {
  std::vector<std::string> argv = {TESSERA_EMULATED_GPU_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, "", timeout_s);
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

const std::string kPrompt = "a stitch in time";

class DeviceTools : public ::testing::Test {
 protected:
  // One CPU training run per suite: byte shards of a repeated sentence, the tests' tiny
  // model (1 layer, 32 wide, seq_len 32), 150 steps (enough for greedy continuations that
  // are not one byte repeated), a checkpoint at the end.
  static void SetUpTestSuite() {
    work_ = std::make_unique<ScratchDir>("device_tools");
    const ProcessResult train = train_sentence_model(work_->dir);
    ASSERT_TRUE(train.exited && train.exit_code == 0) << train.describe();
  }
  static void TearDownTestSuite() { work_.reset(); }

  static std::string dir() { return work_->dir; }
  static std::string ckpt() { return dir() + "/ckpt"; }

  static std::unique_ptr<ScratchDir> work_;
};

std::unique_ptr<ScratchDir> DeviceTools::work_;

// `generate` of the checkpoint on the CPU (the plain binary) and on the emulated GPU: both
// succeed and print the same text, the prompt and `tokens` more bytes, not all the same
// (which a broken model would print on both).
void expect_same_text_on_both(const std::vector<std::string>& generate_args, int tokens) {
  std::vector<std::string> cpu_args = generate_args, gpu_args = generate_args;
  cpu_args.insert(cpu_args.end(), {"--device", "cpu"});
  gpu_args.insert(gpu_args.end(), {"--device", "cuda"});
  const ProcessResult cpu = run_tessera(cpu_args);
  ASSERT_TRUE(cpu.exited && cpu.exit_code == 0) << cpu.describe();
  EXPECT_EQ(cpu.out.size(), kPrompt.size() + tokens + 1) << cpu.describe();
  EXPECT_EQ(cpu.out.rfind(kPrompt, 0), 0u) << cpu.describe();
  const std::string added = cpu.out.substr(std::min(cpu.out.size(), kPrompt.size()));
  EXPECT_GE(std::set<char>(added.begin(), added.end()).size(), 4u) << cpu.describe();
  const ProcessResult gpu = run_emulated_gpu(gpu_args);
  ASSERT_TRUE(gpu.exited && gpu.exit_code == 0) << gpu.describe();
  EXPECT_EQ(gpu.out, cpu.out) << "cpu:\n" << cpu.describe() << "\ncuda:\n" << gpu.describe();
}

TEST_F(DeviceTools, GreedyGenerateOnTheGpuMatchesTheCpu) {
  // 20 tokens: past seq_len 32 with the 16-byte prompt, so the window slides too.
  expect_same_text_on_both(
      {"generate", "--ckpt", ckpt(), "--prompt", kPrompt, "--tokens", "20"}, 20);
  // --device cpu is the default.
  const ProcessResult plain =
      run_tessera({"generate", "--ckpt", ckpt(), "--prompt", kPrompt, "--tokens", "20"});
  const ProcessResult cpu = run_tessera(
      {"generate", "--ckpt", ckpt(), "--prompt", kPrompt, "--tokens", "20", "--device", "cpu"});
  EXPECT_EQ(plain.out, cpu.out) << plain.describe();
}

// Sampling reads the last row of logits through the backend (a copy from the GPU).
TEST_F(DeviceTools, SampledGenerateOnTheGpuMatchesTheCpu) {
  expect_same_text_on_both({"generate", "--ckpt", ckpt(), "--prompt", kPrompt, "--tokens", "8",
                            "--temperature", "1.0", "--seed", "7"},
                           8);
}

// A LoRA run over the checkpoint: the adapters from its checkpoint, the frozen base from
// the checkpoint it started from, both uploaded to the GPU.
TEST_F(DeviceTools, LoraGenerateOnTheGpuMatchesTheCpu) {
  const std::string lora_dir = dir() + "/lora";
  write_text(dir() + "/lora.yaml",
             tiny_model_yaml() + "data:\n  train: " + dir() + "/data/train_*.bin\n" +
                 "train:\n  steps: 20\n  global_batch: 4\n  micro_batch: 2\n" +
                 "optim:\n  lr: 3.0e-2\n  warmup_steps: 0\n" +
                 "checkpoint:\n  dir: " + lora_dir + "/ckpt\n" +
                 "log:\n  dir: " + lora_dir + "/runs\n" +
                 "lora:\n  rank: 4\n  dropout: 0\n  targets: qkv,attn_out,mlp_up,mlp_down\n" +
                 "  base: " + ckpt() + "\n");
  const ProcessResult train = run_tessera(train_args(dir() + "/lora.yaml"), dir(), 120);
  ASSERT_TRUE(train.exited && train.exit_code == 0) << train.describe();
  expect_same_text_on_both(
      {"generate", "--ckpt", lora_dir + "/ckpt", "--prompt", kPrompt, "--tokens", "12"}, 12);
}

TEST(DeviceToolsCli, BenchOnTheGpuReportsTheDevice) {
  const std::vector<std::string> args = {"bench", "--device", "cuda", "--model", "tiny",
                                         "--batch", "1", "--seq", "16", "--steps", "1"};
  std::vector<std::string> json_args = args;
  json_args.push_back("--json");
  const ProcessResult r = run_emulated_gpu(json_args, 300);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("device"), "cuda") << r.out;
  EXPECT_GT(j.at("tokens_per_s").get<double>(), 0) << r.out;
  EXPECT_GT(j.at("step_ms").get<double>(), 0) << r.out;
  EXPECT_GE(j.at("backward_ms").get<double>(), 0) << r.out;
  EXPECT_TRUE(j.at("mfu").is_null()) << r.out;  // no peak is known for a GPU
  EXPECT_TRUE(j.at("peak_gflops").is_null()) << r.out;

  const ProcessResult text = run_emulated_gpu(args, 300);
  ASSERT_TRUE(text.exited && text.exit_code == 0) << text.describe();
  EXPECT_TRUE(contains(text.out, "tiny on cuda")) << text.out;
  EXPECT_TRUE(contains(text.out, "tokens/s on cuda")) << text.out;
  EXPECT_TRUE(contains(text.out, "MFU not reported")) << text.out;
}

// --attention cudnn on the emulated GPU, which has no cuDNN: the model's one line saying
// so, and the steps timed on our flash kernel (GPT-2 "small": head size 64). A word other
// than own or cudnn is refused in one line.
TEST(DeviceToolsCli, BenchAttentionEngine) {
  const ProcessResult r = run_emulated_gpu({"bench", "--device", "cuda", "--model", "small",
                                            "--precision", "bf16", "--attention", "cudnn",
                                            "--batch", "1", "--seq", "16", "--steps", "1",
                                            "--warmup", "1", "--json"},
                                           300);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_EQ(nlohmann::json::parse(r.out).at("attention"), "flash") << r.out;
  EXPECT_TRUE(contains(r.err, "kernels.attention cudnn: the CUDA emulator has no cuDNN; the "
                              "attention runs on our flash kernel"))
      << r.err;
  EXPECT_TRUE(one_error_line(run_tessera({"bench", "--attention", "fast"}),
                             {"tessera bench: --attention expects own or cudnn, got 'fast'"}));
}

TEST(DeviceToolsCli, BenchOnTheCpuSaysSo) {
  const ProcessResult r = run_tessera(
      {"bench", "--model", "tiny", "--batch", "1", "--seq", "16", "--steps", "1", "--json"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("device"), "cpu") << r.out;
  EXPECT_GT(j.at("mfu").get<double>(), 0) << r.out;
  EXPECT_GT(j.at("peak_gflops").get<double>(), 0) << r.out;
}

TEST(DeviceToolsCli, UnknownDeviceIsRefused) {
  for (const char* binary : {TESSERA_BINARY, TESSERA_EMULATED_GPU_BINARY}) {
    const ProcessResult generate = run_process(
        {binary, "generate", "--ckpt", "nowhere", "--prompt", "x", "--device", "tpu"});
    EXPECT_TRUE(one_error_line(generate, {"tessera generate", "--device", "cpu", "cuda", "'tpu'"}))
        << binary;
    const ProcessResult bench = run_process({binary, "bench", "--device", "tpu"});
    EXPECT_TRUE(one_error_line(bench, {"tessera bench", "--device", "cpu", "cuda", "'tpu'"}))
        << binary;
    EXPECT_TRUE(one_error_line(run_process({binary, "bench", "--device"}), {"--device"}))
        << binary;
  }
}

// The real binary on a machine without a usable GPU (or built without CUDA): one line
// naming --device cuda and the reason, exit 2, before any work. Skipped where a GPU is
// usable.
TEST(DeviceToolsCli, CudaWithoutAGpuIsOneLine) {
  const ProcessResult bench = run_tessera(
      {"bench", "--device", "cuda", "--model", "tiny", "--batch", "1", "--seq", "16", "--steps",
       "1"});
  if (bench.exited && bench.exit_code == 0) GTEST_SKIP() << "this machine has a usable GPU";
  EXPECT_TRUE(one_error_line(bench, {"tessera bench: --device cuda: ", "CUDA"}));
  EXPECT_FALSE(contains(bench.err, "train.device")) << bench.err;  // not the recipe key
  const ProcessResult generate = run_tessera(
      {"generate", "--ckpt", "nowhere", "--prompt", "x", "--device", "cuda"});
  EXPECT_TRUE(one_error_line(generate, {"tessera generate: --device cuda: ", "CUDA"}));
  EXPECT_FALSE(contains(generate.err, "train.device")) << generate.err;
}

}  // namespace
