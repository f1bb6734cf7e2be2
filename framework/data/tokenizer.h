// Tokenizers: text <-> token ids.
//
// ByteTokenizer is the trivial one (a token is a byte, vocabulary 256) used by the tiny
// demo and tests. Gpt2Tokenizer is OpenAI's GPT-2 byte-level BPE, read from the original
// encoder.json and vocab.bpe files, and produces the same ids as GPT-2's encoder.py.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int> encode(std::string_view text) const = 0;
  // Throws tessera::Error for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int>& tokens) const = 0;
  virtual int vocab_size() const = 0;
  virtual int eot_token() const = 0;  // end-of-text id, or -1 if this tokenizer has none
};

// Token = byte value. Vocabulary 256, no end-of-text token.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int> encode(std::string_view text) const override;
  std::string decode(const std::vector<int>& tokens) const override;
  int vocab_size() const override { return 256; }
  int eot_token() const override { return -1; }
};

// GPT-2's byte-level BPE: vocabulary 50257, <|endoftext|> = 50256. encode() treats the
// text "<|endoftext|>" as ordinary text (like encoder.py); callers that want document
// separators insert eot_token() themselves. Not thread-safe: encode() fills a cache.
class Gpt2Tokenizer final : public Tokenizer {
 public:
  // Throws tessera::Error naming the file if either is missing or malformed.
  Gpt2Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path);
  ~Gpt2Tokenizer() override;
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  std::vector<int> encode(std::string_view text) const override;
  std::string decode(const std::vector<int>& tokens) const override;
  int vocab_size() const override;
  int eot_token() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GPT-2's pre-tokenization: splits text into the pieces that its regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matches; BPE then runs inside each piece. Exposed for tests. The pieces cover the text
// exactly; bytes that are not valid UTF-8 count as "other" characters.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

// A byte as GPT-2's tokenizer files write it (encoder.py's bytes_to_unicode: printable
// Latin-1 bytes as themselves, the other 68 from U+0100 on, e.g. ' ' as "Ġ"), in UTF-8.
std::string gpt2_byte_symbol(unsigned char byte);

// kind "bytes" (encoder and merges must be empty) or "gpt2" (both paths required).
// Throws tessera::Error for an unknown kind or missing / invalid files.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& encoder,
                                          const std::string& merges);

}  // namespace tessera
