// A model too large for memory fails with one message that says what it asked for:
// the allocator's error, then the model's memory plan and what to change.
#include <gtest/gtest.h>

#include <string>

#include "base/error.h"
#include "framework/model/gpt_model.h"

namespace tessera {
namespace {

TEST(Gpt2Memory, OutOfMemoryNamesThePlanAndMicroBatch) {
  GPTConfig cfg;
  cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 64, cfg.seq_len = 1024;
  // 2^22 sequences of 1024 tokens: about 64 TiB of attention probabilities alone.
  const int max_batch = 1 << 22;
  try {
    GPTModel model(cfg, max_batch);
    FAIL() << "a 64 TiB activation arena was allocated";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const char* part : {"out of memory", "the model's memory on cpu", "activations",
                             "micro_batch 4194304 x seq_len 1024", "full attention",
                             "AdamW's moments", "A smaller train.micro_batch"})
      EXPECT_NE(what.find(part), std::string::npos) << "missing '" << part << "' in: " << what;
  }
}

}  // namespace
}  // namespace tessera
