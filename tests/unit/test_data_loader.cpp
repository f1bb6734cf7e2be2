// DataLoader: sample windows, the global order, dp-invariance, resume and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "framework/data/loader.h"
#include "framework/data/shard.h"
#include "base/error.h"
#include "tests/unit/test_support.h"

namespace fs = std::filesystem;
using tessera::DataLoader;
using tessera::Error;
using tessera::LoaderOptions;
using tessera::test_support::error_of;
using tessera::test_support::fresh_dir;

namespace {

constexpr int kT = 16;

// Shards of the given sizes whose token at global offset o is o itself, so a sample's
// first input token divided by T is its sample index. An empty shard sits in the middle
// and windows cross shard boundaries.
std::string make_counting_shards(const std::string& name, std::vector<int> sizes = {1000, 37, 0, 500}) {
  const std::string dir = fresh_dir("loader_" + name);
  int offset = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::vector<uint16_t> tokens(sizes[s]);
    for (auto& t : tokens) t = static_cast<uint16_t>(offset++);
    char file[32];
    std::snprintf(file, sizeof(file), "/train_%06zu.bin", s);
    tessera::write_shard(dir + file, tokens);
  }
  return dir;
}

LoaderOptions options(const std::string& dir, int dp_rank = 0, int dp_size = 1) {
  LoaderOptions o;
  o.pattern = dir + "/train_*.bin";
  o.seq_len = kT;
  o.micro_batch = 2;
  o.global_batch = 8;
  o.dp_rank = dp_rank;
  o.dp_size = dp_size;
  o.vocab_size = 65536;
  o.seed = 1337;
  return o;
}

// Sample indices of the next `calls` micro-batches, checking each window's content.
std::vector<int> take(DataLoader& loader, const LoaderOptions& o, int calls) {
  std::vector<int> samples;
  std::vector<int32_t> in(o.micro_batch * o.seq_len), tgt(in.size());
  for (int c = 0; c < calls; ++c) {
    loader.next_micro_batch(in.data(), tgt.data());
    for (int b = 0; b < o.micro_batch; ++b) {
      const int32_t* x = &in[b * o.seq_len];
      const int32_t* y = &tgt[b * o.seq_len];
      for (int t = 0; t < o.seq_len; ++t) {
        EXPECT_EQ(x[t], x[0] + t);  // consecutive tokens of the concatenation
        EXPECT_EQ(y[t], x[0] + t + 1);
      }
      EXPECT_EQ(x[0] % o.seq_len, 0);  // windows start at multiples of T
      samples.push_back(x[0] / o.seq_len);
    }
  }
  return samples;
}

}  // namespace

TEST(DataLoader, CountsTokensAndSamples) {
  const std::string dir = make_counting_shards("counts");
  DataLoader loader(options(dir));
  EXPECT_EQ(loader.num_tokens(), 1537);
  EXPECT_EQ(loader.num_samples(), (1537 - 1) / kT);
  ASSERT_EQ(loader.files().size(), 4u);
  EXPECT_EQ(loader.files()[0], dir + "/train_000000.bin");
}

TEST(DataLoader, ValidationOrderIsSequentialAndWraps) {
  const std::string dir = make_counting_shards("sequential");
  LoaderOptions o = options(dir);
  o.shuffle = false;
  DataLoader loader(o);
  const int64_t S = loader.num_samples();
  const std::vector<int> samples = take(loader, o, int(S));  // two epochs of 2 per call
  for (int i = 0; i < int(samples.size()); ++i) EXPECT_EQ(samples[i], i % S);
}

TEST(DataLoader, EachEpochIsAPermutationAndEpochsDiffer) {
  const std::string dir = make_counting_shards("perm");
  LoaderOptions o = options(dir);
  DataLoader loader(o);
  const int S = int(loader.num_samples());  // 96 = 48 calls per epoch
  const std::vector<int> both = take(loader, o, S);
  std::vector<int> e0(both.begin(), both.begin() + S), e1(both.begin() + S, both.end());
  EXPECT_NE(e0, e1);
  std::vector<int> natural(S);
  for (int i = 0; i < S; ++i) natural[i] = i;
  EXPECT_NE(e0, natural);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  EXPECT_EQ(e0, natural);
  EXPECT_EQ(e1, natural);
}

TEST(DataLoader, OrderIsPinnedAcrossPlatformsAndSeeds) {
  // The order is part of a run's reproducibility (resume on another machine), so its
  // exact values are pinned: changing the generator must be a deliberate decision. These
  // values were cross-checked with an independent Python version of docs/data.md's
  // algorithm (SplitMix64 keyed by mix(seed) ^ mix(epoch + 1), Fisher-Yates from the end).
  const std::string dir = make_counting_shards("pinned");
  LoaderOptions o = options(dir);
  DataLoader a(o);
  const std::vector<int> first = take(a, o, 4);
  EXPECT_EQ(first, (std::vector<int>{19, 45, 87, 4, 34, 21, 47, 44}));
  o.seed = 1338;
  DataLoader b(o);
  EXPECT_NE(take(b, o, 4), first);
}

TEST(DataLoader, DataParallelRanksSplitTheSameGlobalBatches) {
  const std::string dir = make_counting_shards("dp");
  const int steps = 30;  // 240 samples: crosses two epoch boundaries (96 samples each)
  LoaderOptions o1 = options(dir);
  DataLoader single(o1);
  const std::vector<int> reference = take(single, o1, steps * 4);  // 4 calls per step

  for (int dp : {2, 4}) {
    std::vector<std::vector<int>> per_rank;
    for (int r = 0; r < dp; ++r) {
      LoaderOptions o = options(dir, r, dp);
      DataLoader loader(o);
      per_rank.push_back(take(loader, o, steps * (8 / (dp * 2))));
    }
    // Step g of dp=1 equals the concatenation over ranks of each rank's step g.
    std::vector<int> merged;
    const int per_step = 8 / dp;
    for (int g = 0; g < steps; ++g) {
      for (int r = 0; r < dp; ++r) {
        merged.insert(merged.end(), per_rank[r].begin() + g * per_step,
                      per_rank[r].begin() + (g + 1) * per_step);
      }
    }
    EXPECT_EQ(merged, reference) << "dp=" << dp;
  }
}

TEST(DataLoader, SetPositionResumesExactly) {
  const std::string dir = make_counting_shards("resume");
  for (int dp : {1, 2}) {
    LoaderOptions o = options(dir, dp - 1, dp);
    DataLoader first(o);
    take(first, o, 7 * (8 / (2 * dp)) + 1);  // 7 steps and one micro-batch, for dp=2 too
    const int64_t pos = first.position();
    EXPECT_EQ(pos, 7 * 8 + 2 * dp);
    const std::vector<int> expected = take(first, o, 100);

    DataLoader resumed(o);
    resumed.set_position(pos);
    EXPECT_EQ(resumed.position(), pos);
    EXPECT_EQ(take(resumed, o, 100), expected) << "dp=" << dp;

    // Going backwards (a fresh epoch permutation is rebuilt) works as well.
    resumed.set_position(0);
    DataLoader fresh(o);
    EXPECT_EQ(take(resumed, o, 10), take(fresh, o, 10));
  }
}

TEST(DataLoader, StepPositionResumesWithAnotherLayout) {
  const std::string dir = make_counting_shards("relayout");
  LoaderOptions o1 = options(dir);
  DataLoader single(o1);
  take(single, o1, 5 * 4);  // 5 steps
  const std::vector<int> next_step = take(single, o1, 4);
  std::vector<int> merged;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o = options(dir, r, 2);
    DataLoader loader(o);
    loader.set_position(5 * 8);
    const auto part = take(loader, o, 2);
    merged.insert(merged.end(), part.begin(), part.end());
  }
  EXPECT_EQ(merged, next_step);
}

TEST(DataLoader, BadPositionAndBatchShapesAreErrors) {
  const std::string dir = make_counting_shards("shapes");
  DataLoader loader(options(dir, 0, 2));
  EXPECT_THROW(loader.set_position(3), Error);   // not a micro-batch boundary of dp=2, B=2
  EXPECT_THROW(loader.set_position(-8), Error);
  LoaderOptions o = options(dir, 0, 3);  // 8 is not a multiple of 3 x 2
  const std::string msg = error_of([&] { DataLoader bad(o); });
  EXPECT_NE(msg.find("train.global_batch 8 is not a multiple"), std::string::npos) << msg;
  o = options(dir, 2, 2);
  EXPECT_THROW(DataLoader bad(o), Error);
}

TEST(DataLoader, TokenAtOrAboveVocabNamesShardAndIndex) {
  const std::string dir = make_counting_shards("vocab");
  LoaderOptions o = options(dir);
  o.vocab_size = 1010;  // shard 0 holds 0..999; shard 1 holds 1000..1036
  const std::string msg = error_of([&] { DataLoader bad(o); });
  EXPECT_EQ(msg, dir + "/train_000001.bin: token 1010 at index 10 is >= model.vocab_size 1010");
}

TEST(DataLoader, MissingDirectoryAndEmptyGlob) {
  const std::string dir = fresh_dir("loader_globs");
  LoaderOptions o = options(dir + "/foo");
  std::string msg = error_of([&] { DataLoader bad(o); });
  EXPECT_NE(msg.find("directory " + dir + "/foo does not exist"), std::string::npos) << msg;
  o = options(dir);
  msg = error_of([&] { DataLoader bad(o); });
  EXPECT_NE(msg.find("no token shard matches '" + dir + "/train_*.bin'"), std::string::npos)
      << msg;
}

TEST(DataLoader, DamagedShardFailsAtOpen) {
  const std::string dir = make_counting_shards("damaged", {100, 100});
  fs::resize_file(dir + "/train_000001.bin", 1024 + 2 * 60);
  const std::string msg = error_of([&] { DataLoader bad(options(dir)); });
  EXPECT_EQ(msg, dir + "/train_000001.bin: truncated: header says 100 tokens, file holds 60");
}

TEST(DataLoader, TooFewTokensForOneSample) {
  const std::string dir = make_counting_shards("few", {kT});  // needs T + 1
  const std::string msg = error_of([&] { DataLoader bad(options(dir)); });
  EXPECT_NE(msg.find("too few for one sample"), std::string::npos) << msg;
}
