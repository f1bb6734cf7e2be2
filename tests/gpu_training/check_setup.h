// What the GPU training checks (gpu_training_check, gpu_layout_check) train: a small GPT-2,
// AdamW, and the bytes of a short text embedded below, so that the checks need no files on
// the GPU machine.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/rng.h"
#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"

namespace tessera::gpu_check {

// GPT-2 with 2 layers, 64 wide, n_head heads, T = seq_len, the 256 byte values as tokens.
inline GPTConfig small_gpt2(int n_head, int seq_len) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = n_head, c.n_embd = 64;
  c.vocab_size = 256, c.padded_vocab_size = 256, c.seq_len = seq_len;
  return c;
}

// AdamW: lr 1e-3 after 5 warm-up steps, cosine to 1e-4; betas 0.9 / 0.95; clipping at 1.
inline OptimConfig check_optim() {
  OptimConfig o;
  o.lr = 1e-3, o.min_lr = 1e-4, o.warmup_steps = 5;
  o.beta1 = 0.9, o.beta2 = 0.95, o.eps = 1e-8, o.weight_decay = 0.1, o.grad_clip = 1.0;
  return o;
}

// The training text: learnable structure (words, repeated phrases, punctuation) in bytes.
constexpr const char* kText =
    "The quick brown fox jumps over the lazy dog. The lazy dog sleeps in the sun, and the "
    "quick brown fox runs into the green wood. In the green wood there is a small house, and "
    "in the small house there lives an old man who makes clocks. Every morning the old man "
    "winds his clocks, one after another, and every evening he listens to them tick. "
    "One day the quick brown fox comes to the small house and asks the old man for a clock. "
    "The old man says: a clock is not for a fox, a fox has the sun and the moon. The fox "
    "says: the sun sleeps at night and the moon hides in the clouds, but a clock keeps the "
    "time all day and all night. So the old man gives the fox a small clock, and the fox "
    "runs back into the green wood with the clock under his arm. Now the lazy dog hears the "
    "clock tick, and the lazy dog wakes up, and the lazy dog asks the fox for the time. "
    "It is time to sleep, says the fox, and the lazy dog sleeps again in the sun. "
    "Counting is easy: one, two, three, four, five, six, seven, eight, nine, ten. "
    "Counting again: one, two, three, four, five, six, seven, eight, nine, ten. "
    "Letters in order: a b c d e f g h i j k l m n o p q r s t u v w x y z. "
    "Letters again: a b c d e f g h i j k l m n o p q r s t u v w x y z. "
    "The end of the story is the beginning of the next one: the quick brown fox jumps over "
    "the lazy dog, and the old man winds his clocks, one after another, every morning.\n";

// The token ids of one optimizer step: `micro_batches` micro-batches of [B, T], inputs and
// next-token targets, windows of the text at offsets drawn from the counter-based RNG by
// (step, row): the same batches on every backend, in every layout and every run.
struct StepBatch {
  std::vector<int32_t> x, y;  // [micro_batches][B * T] back to back
  int64_t tokens_per_micro_batch = 0;
  const int32_t* inputs(int m) const { return x.data() + m * tokens_per_micro_batch; }
  const int32_t* targets(int m) const { return y.data() + m * tokens_per_micro_batch; }
};

inline StepBatch batch_of_step(int step, int micro_batches, int B, int T) {
  static const CounterRng rng(7, "gpu_training_check batches");
  const int64_t len = (int64_t)std::strlen(kText);
  StepBatch b;
  b.tokens_per_micro_batch = (int64_t)B * T;
  b.x.resize((size_t)micro_batches * B * T);
  b.y.resize(b.x.size());
  for (int row = 0; row < micro_batches * B; row++) {
    const uint64_t counter = (uint64_t)step * micro_batches * B + (uint64_t)row;
    const int64_t start = std::min<int64_t>((int64_t)(rng.uniform(counter) * (len - T - 1)),
                                            len - T - 1);
    for (int t = 0; t < T; t++) {
      b.x[(size_t)row * T + t] = (unsigned char)kText[start + t];
      b.y[(size_t)row * T + t] = (unsigned char)kText[start + t + 1];
    }
  }
  return b;
}

}  // namespace tessera::gpu_check
