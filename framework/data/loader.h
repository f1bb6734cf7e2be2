// Training and validation batches from llm.c token shards.
//
// A sample is a window of T+1 consecutive tokens starting at a multiple of T in the
// concatenation of all shards (inputs = first T, targets = last T). The global order of
// samples depends only on (seed, epoch): each epoch is a fresh permutation of all
// samples (shuffle=true) or the natural order (shuffle=false, used for validation).
// Global batch g of an optimizer step is the next `global_batch` samples of that order;
// data-parallel rank r of `dp` takes the r-th contiguous slice of it, and splits that
// into micro-batches. So the samples a step sees, and their order, do not depend on dp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

struct LoaderOptions {
  std::string pattern;     // path or glob of *.bin shards ("recipe key data.train")
  int seq_len = 64;        // T
  int micro_batch = 4;     // B: sequences per next_micro_batch()
  int global_batch = 4;    // sequences per optimizer step over all dp ranks
  int dp_rank = 0, dp_size = 1;
  int vocab_size = 256;    // every token must be < this, or load fails naming shard+offset
  uint64_t seed = 1337;
  bool shuffle = true;
};

class DataLoader {
 public:
  // Opens (memory-maps) and validates every shard. Throws tessera::Error for a pattern
  // matching nothing, a missing directory, a wrong magic/version, a truncated shard, a
  // token id >= vocab_size, or too few tokens for one sample.
  explicit DataLoader(const LoaderOptions& options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Fills inputs and targets (each micro_batch * seq_len int32) with this rank's next
  // micro-batch. A step consists of global_batch / (dp_size * micro_batch) calls.
  void next_micro_batch(int32_t* inputs, int32_t* targets);

  // Samples of the global order consumed so far (all ranks agree); set to resume.
  int64_t position() const;
  void set_position(int64_t samples_consumed);

  int64_t num_samples() const;  // samples in one epoch
  int64_t num_tokens() const;   // tokens in all shards
  const std::vector<std::string>& files() const;  // the shards, in order

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace tessera
