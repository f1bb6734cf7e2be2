// Tensor-parallel shard specs: every tp layout's slices, put back together through
// ParamInfo::logical_index, are exactly the single-process (tp = 1) parameters.
#include <gtest/gtest.h>

#include <vector>

#include "framework/model/gpt_model.h"
#include "parallel/collectives.h"

namespace tessera {
namespace {

GPTConfig tiny_config(int vocab) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.vocab_size = vocab;
  c.padded_vocab_size = vocab, c.seq_len = 16;
  return c;
}

void expect_slices_concatenate_to_logical(const GPTConfig& cfg, int tp) {
  GPTModel full(cfg, 1);
  full.init_weights(1234);
  std::vector<std::vector<float>> rebuilt(full.table().params().size());
  std::vector<std::vector<int>> hits(rebuilt.size());
  for (size_t i = 0; i < rebuilt.size(); i++) {
    rebuilt[i].assign(full.table().params()[i].numel, 0.0f);
    hits[i].assign(full.table().params()[i].numel, 0);
  }
  for (int r = 0; r < tp; r++) {
    // No collective runs here: the communicator is only a placeholder.
    GPTModel part(cfg, 1, TensorParallel{r, tp, &single_process_communicator()});
    part.init_weights(1234);
    ASSERT_EQ(part.table().params().size(), rebuilt.size());
    for (size_t i = 0; i < rebuilt.size(); i++) {
      const ParamInfo& p = part.table().params()[i];
      EXPECT_EQ(p.shape, full.table().params()[i].shape) << p.name;
      for (int64_t k = 0; k < p.numel; k++) {
        const float v = part.params()[p.offset + k];
        const int64_t li = p.logical_index(k);
        if (li < 0) {
          EXPECT_EQ(v, 0.0f) << p.name << " local padding " << k;
          continue;
        }
        ASSERT_LT(li, (int64_t)rebuilt[i].size()) << p.name;
        if (p.shard.sharded()) {
          hits[i][li]++;
          rebuilt[i][li] = v;
        } else {
          EXPECT_EQ(v, full.params()[full.table().params()[i].offset + li]) << p.name << " replica";
          hits[i][li] = 1, rebuilt[i][li] = v;
        }
      }
    }
  }
  for (size_t i = 0; i < rebuilt.size(); i++) {
    const ParamInfo& p = full.table().params()[i];
    for (int64_t k = 0; k < p.numel; k++) {
      ASSERT_EQ(hits[i][k], 1) << p.name << " element " << k << " held " << hits[i][k] << " times";
      ASSERT_EQ(rebuilt[i][k], full.params()[p.offset + k]) << p.name << " element " << k;
    }
  }
}

TEST(TensorParallelParams, Tp2SlicesConcatenateToTp1) { expect_slices_concatenate_to_logical(tiny_config(256), 2); }
TEST(TensorParallelParams, Tp4SlicesConcatenateToTp1) { expect_slices_concatenate_to_logical(tiny_config(256), 4); }
TEST(TensorParallelParams, VocabNotDivisibleByTp) {
  expect_slices_concatenate_to_logical(tiny_config(255), 2);
  expect_slices_concatenate_to_logical(tiny_config(255), 4);
}

TEST(TensorParallelParams, QkvRowsAreThisRanksHeads) {
  const GPTConfig cfg = tiny_config(256);  // C = 32, 4 heads of 8
  GPTModel part(cfg, 1, TensorParallel{1, 2, &single_process_communicator()});
  const ParamInfo& p = part.table().get("h.0.attn.qkv.weight");
  EXPECT_EQ(p.local_shape, (std::vector<int64_t>{48, 32}));
  // Local rows 0..15: q rows 16..31 (heads 2, 3); 16..31: k rows 48..63; 32..47: v 80..95.
  EXPECT_EQ(p.logical_index(0), 16 * 32);
  EXPECT_EQ(p.logical_index(16 * 32), 48 * 32);
  EXPECT_EQ(p.logical_index(32 * 32 + 5), 80 * 32 + 5);
  const ParamInfo& proj = part.table().get("h.0.attn.proj.weight");
  EXPECT_EQ(proj.local_shape, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(proj.logical_index(16 + 3), 32 + 16 + 3);  // row 1, column 16 + 3
  EXPECT_EQ(part.table().get("h.0.attn.proj.bias").local_shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(part.num_parameters(), GPTModel(cfg, 1).num_parameters());
}

}  // namespace
}  // namespace tessera
