#include "framework/tools/generate.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "base/rng.h"
#include "framework/train/checkpointing.h"

namespace tessera {

CheckpointModel load_checkpoint_model(const std::string& path, kernels::Device device) {
  CheckpointModel out;
  const std::string dir = resolve_checkpoint_dir(path);
  verify_checkpoint(dir);
  const LoadedCheckpoint index = load_checkpoint(dir, {});
  out.recipe = parse_recipe(index.meta.recipe_yaml, dir + "/index.h5 (/meta/recipe_yaml)");
  // Inference computes in fp32, whatever precision trained the model, on the device asked
  // for (not the recipe's train.device: a checkpoint reads the same on either).
  ModelOptions options = ModelOptions::from_recipe(out.recipe);
  options.backend = &kernels::backend_for(device);
  options.precision = kernels::Dtype::fp32;
  options.stochastic_rounding = false;
  options.attention = AttentionEngine::own;  // cuDNN's attention computes in bf16
  out.model = std::make_unique<GPTModel>(GPTConfig::from_recipe(out.recipe.model), 1,
                                     TensorParallel{}, 1, PipelineStage{}, 1, options);
  if (out.model->has_lora()) {
    // Adapters only: the base weights come from the checkpoint the run started from,
    // which must still be the same (its fingerprint is recorded).
    const nlohmann::json base = index.meta.extra.value("lora_base", nlohmann::json());
    check(base.is_object() && base.contains("path"),
          dir + "/index.h5: a LoRA checkpoint without its base model's reference (/meta/extra "
                "lora_base)");
    const std::string base_path = base.at("path").get<std::string>();
    std::string base_dir;
    try {
      base_dir = resolve_checkpoint_dir(base_path);
    } catch (const Error& e) {
      throw Error(dir + ": its LoRA base model is gone: " + e.what());
    }
    verify_checkpoint(base_dir);
    GPTModel& model = *out.model;
    HostMirror host_base(model.backend(), model.base_params(), model.base_table().total_numel());
    const LoadedCheckpoint loaded =
        load_checkpoint(base_dir, base_parameter_dests(model, host_base.get()));
    check(checkpoint_fingerprint(loaded) == base.value("fingerprint", ""),
          dir + ": its LoRA base model " + base_dir + " has changed since (fingerprint " +
              checkpoint_fingerprint(loaded) + ", recorded " + base.value("fingerprint", "") + ")");
    host_base.upload();
  }
  HostMirror host_params(out.model->backend(), out.model->params(), out.model->flat_size());
  out.checkpoint = load_checkpoint(dir, parameter_dests(*out.model, host_params.get()));
  host_params.upload();
  return out;
}

namespace {

// A token drawn from softmax(logits / temperature) over logits[0 .. n): u in (0, 1)
// picks where the cumulative probability first exceeds it.
int32_t sample_token(const float* logits, int n, double temperature, double u) {
  const float top = *std::max_element(logits, logits + n);
  std::vector<double> weights(n);
  double total = 0;
  for (int i = 0; i < n; i++) total += weights[i] = std::exp((logits[i] - top) / temperature);
  double acc = 0;
  for (int i = 0; i < n; i++) {
    acc += weights[i];
    if (acc > u * total) return i;
  }
  return n - 1;
}

}  // namespace

std::vector<int32_t> continue_tokens(GPTModel& model, std::vector<int32_t> tokens,
                                     const SamplingOptions& o) {
  const GPTConfig& c = model.config();
  check(model.tp().size == 1 && model.stage().size == 1,
        "continue_tokens: needs the whole model in one process");
  check(!tokens.empty(), "the prompt is empty: it needs at least one token");
  for (int32_t t : tokens)
    check(t >= 0 && t < c.vocab_size, "the prompt has token " + std::to_string(t) +
                                          ", outside the model's vocabulary of " +
                                          std::to_string(c.vocab_size));
  check(o.temperature >= 0 && std::isfinite(o.temperature), "temperature must be >= 0");
  const CounterRng rng(o.seed, "generate");
  std::vector<float> row;  // the last position's logits, where they are device memory
  for (int i = 0; i < o.tokens; i++) {
    const int T = std::min<int>((int)tokens.size(), c.seq_len);
    model.forward(tokens.data() + tokens.size() - T, nullptr, 1, T);
    if (o.temperature == 0) {
      tokens.push_back(model.argmax_token(T - 1));  // reads its row through host_view
      continue;
    }
    const float* logits = model.backend().host_view(
        model.logits() + (int64_t)(T - 1) * model.local_vocab(), c.vocab_size, row);
    tokens.push_back(sample_token(logits, c.vocab_size, o.temperature, rng.uniform(i)));
  }
  return tokens;
}

std::vector<float> prompt_logits(GPTModel& model, const std::vector<int32_t>& tokens) {
  const GPTConfig& c = model.config();
  check(model.tp().size == 1 && model.stage().size == 1,
        "prompt_logits: needs the whole model in one process");
  check(!tokens.empty() && (int)tokens.size() <= c.seq_len,
        "the prompt has " + std::to_string(tokens.size()) + " tokens; 1 to seq_len " +
            std::to_string(c.seq_len) + " are needed for its logits");
  for (int32_t t : tokens)
    check(t >= 0 && t < c.vocab_size, "the prompt has token " + std::to_string(t) +
                                          ", outside the model's vocabulary of " +
                                          std::to_string(c.vocab_size));
  const int T = (int)tokens.size();
  model.forward(tokens.data(), nullptr, 1, T);
  std::vector<float> out((size_t)T * c.vocab_size), row;
  for (int t = 0; t < T; t++) {
    const float* logits = model.backend().host_view(
        model.logits() + (int64_t)t * model.local_vocab(), c.vocab_size, row);
    std::copy(logits, logits + c.vocab_size, out.begin() + (int64_t)t * c.vocab_size);
  }
  return out;
}

}  // namespace tessera
