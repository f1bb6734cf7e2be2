// `tessera data prepare`: turns a text file into llm.c token shards for training and
// validation, plus a meta.json that records how they were made.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

struct PrepareOptions {
  std::string input;               // the text file (UTF-8 for gpt2; any bytes for bytes)
  std::string out_dir;             // created if missing
  std::string tokenizer = "bytes";  // bytes | gpt2
  std::string encoder, merges;     // gpt2 only: encoder.json and vocab.bpe
  double val_fraction = 0.1;       // the LAST fraction of the tokens becomes validation
  int64_t shard_tokens = 100'000'000;  // tokens per shard file (at most 2^31 - 1)
};

struct PrepareResult {
  std::vector<std::string> train_files, val_files;  // paths written, in order
  int64_t train_tokens = 0, val_tokens = 0;
  int vocab_size = 0;
  int eot_token = -1;               // -1 for tokenizers without one
  std::string meta_path;            // <out_dir>/meta.json
  std::string source_sha256;        // of the input file
  std::vector<std::string> removed_stale;  // older shards in out_dir that this run replaced
};

// Reads options.input, tokenizes it and writes
//   <out_dir>/train_000000.bin, train_000001.bin, ...   the first (1 - val_fraction)
//   <out_dir>/val_000000.bin, ...                       the last val_fraction (if > 0)
//   <out_dir>/meta.json
// With a tokenizer that has an end-of-text token (gpt2), the text is split into documents
// at every blank line ("\n\n", as llm.c's data scripts do) and each document is preceded
// by that token; the separators stay in the text, so decoding the shards and dropping the
// end-of-text tokens gives back the input exactly. Shards named train_NNNNNN.bin or
// val_NNNNNN.bin left in out_dir by an earlier, larger run are deleted (they would
// otherwise match a train_*.bin glob). Throws tessera::Error for bad options, an
// unreadable or empty input, or a split that leaves train or val empty.
PrepareResult prepare_data(const PrepareOptions& options);

class Tokenizer;

// How a shard was tokenized, from the meta.json beside it: kind "bytes" or "gpt2" and, for
// gpt2, the encoder.json and vocab.bpe paths given to `tessera data prepare`.
struct TokenizerFiles {
  std::string kind, encoder, merges;
};
// Throws tessera::Error naming meta.json when it is missing or unreadable.
TokenizerFiles data_tokenizer_files(const std::string& shard);

// The tokenizer that made a shard, from the meta.json that prepare_data wrote beside it:
// bytes, or gpt2 from the encoder.json and vocab.bpe paths meta.json records (as given to
// `tessera data prepare`). Throws tessera::Error naming meta.json when it is missing,
// unreadable, or names a tokenizer (or files) that cannot be made.
std::unique_ptr<Tokenizer> data_tokenizer(const std::string& shard);

}  // namespace tessera
