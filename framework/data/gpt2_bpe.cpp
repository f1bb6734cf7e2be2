// GPT-2's byte-level BPE tokenizer, reimplemented from OpenAI's encoder.py.
//
// How GPT-2 tokenizes a text:
//  1. Pre-tokenize: a regex splits the text into pieces (words with their leading space,
//     runs of digits, runs of punctuation, runs of whitespace); see gpt2_pretokenize().
//  2. Each piece is a string of bytes. Starting from one symbol per byte, repeatedly merge
//     the adjacent pair of symbols with the lowest rank in vocab.bpe, until no adjacent
//     pair has a rank. Each final symbol is one token.
//
// The files store symbols as text: encoder.py maps every byte to a printable Unicode
// character (bytes_to_unicode) so that vocab.bpe can be split on spaces. We undo that
// mapping once while loading, and from then on work with raw bytes and token ids: a
// symbol is always a vocabulary entry, so a merge is (left id, right id) -> merged id.
#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "framework/data/tokenizer.h"
#include "framework/data/unicode_classes.h"
#include "base/error.h"

namespace tessera {
namespace {

// encoder.py's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other
// 68 bytes (controls, space, ...) to U+0100.. in byte order, e.g. ' ' -> 'Ġ' (U+0120).
std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open " + what + " (file missing or unreadable)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass classify(char32_t c) {
  if (c == unicode::kInvalid) return CharClass::kOther;
  if (unicode::is_letter(c)) return CharClass::kLetter;
  if (unicode::is_number(c)) return CharClass::kNumber;
  if (unicode::is_whitespace(c)) return CharClass::kSpace;
  return CharClass::kOther;
}

}  // namespace

std::string gpt2_byte_symbol(unsigned char byte) {
  static const std::array<char32_t, 256> table = bytes_to_unicode();
  const char32_t c = table[byte];  // < U+0800: one or two UTF-8 bytes
  if (c < 0x80) return std::string(1, (char)c);
  return {(char)(0xC0 | (c >> 6)), (char)(0x80 | (c & 0x3F))};
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  // Decode once: code point i starts at byte offset[i]; offset[n] = text.size().
  std::vector<char32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> offset;
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    cp.push_back(d.code_point);
    cls.push_back(classify(d.code_point));
    offset.push_back(pos);
    pos += d.length;
  }
  const size_t n = cp.size();
  offset.push_back(text.size());

  const auto at = [&](size_t i) -> char32_t { return i < n ? cp[i] : 0; };
  // End of the run of class c starting at i (i itself must be of class c).
  const auto run_end = [&](size_t i, CharClass c) {
    while (i < n && cls[i] == c) ++i;
    return i;
  };

  // The regex's alternatives in order; the first that matches at i wins (leftmost-first).
  const auto match = [&](size_t i) -> size_t {
    // 's|'t|'re|'ve|'m|'ll|'d   (lowercase only, as in GPT-2)
    if (cp[i] == U'\'') {
      const char32_t a = at(i + 1), b = at(i + 2);
      if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) {
        return i + 3;
      }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+   (an optional leading U+0020 space)
    for (CharClass c : {CharClass::kLetter, CharClass::kNumber, CharClass::kOther}) {
      const size_t start = (cp[i] == U' ' && i + 1 < n && cls[i + 1] == c) ? i + 1 : i;
      if (cls[start] == c) return run_end(start, c);
    }
    // \s+(?!\S) | \s+ : a whitespace run; if a non-space follows it, the run stops one
    // short (backtracking), leaving its last whitespace character to lead the next word.
    const size_t end = run_end(i, CharClass::kSpace);
    if (end == n || end - i == 1) return end;
    return end - 1;
  };

  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < n;) {
    const size_t end = match(i);
    pieces.push_back(text.substr(offset[i], offset[end] - offset[i]));
    i = end;
  }
  return pieces;
}

struct Gpt2Tokenizer::Impl {
  std::vector<std::string> token_bytes;          // id -> the raw bytes it stands for
  std::unordered_map<std::string, int> encoder;  // raw bytes -> id
  std::array<int, 256> byte_token{};             // id of each single byte
  struct Merge {
    int rank;    // line number in vocab.bpe: lower merges first
    int result;  // id of the merged symbol
  };
  std::unordered_map<uint64_t, Merge> merges;    // key: left id << 32 | right id
  int eot = -1;

  // Piece -> its token ids. Text repeats words, so this skips most BPE work. Bounded so
  // that tokenizing gigabytes does not grow it without limit.
  mutable std::unordered_map<std::string, std::vector<int>> cache;
  static constexpr size_t kMaxCacheEntries = 1 << 20;

  static uint64_t key(int left, int right) {
    return (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  }

  // Turns a symbol as written in the files (bytes_to_unicode characters, UTF-8) back into
  // raw bytes. Returns false if it holds a character outside that alphabet.
  static bool unmap(std::string_view symbol, const std::array<int, 324>& unicode_to_byte,
                    std::string& out) {
    out.clear();
    for (size_t pos = 0; pos < symbol.size();) {
      const unicode::Decoded d = unicode::decode_utf8(symbol, pos);
      if (d.code_point >= unicode_to_byte.size() || unicode_to_byte[d.code_point] < 0) {
        return false;
      }
      out.push_back(static_cast<char>(unicode_to_byte[d.code_point]));
      pos += d.length;
    }
    return true;
  }

  void load_encoder(const std::string& path, const std::array<int, 324>& unicode_to_byte);
  void load_merges(const std::string& path, const std::array<int, 324>& unicode_to_byte);
  std::vector<int> bpe(std::string_view piece) const;
};

void Gpt2Tokenizer::Impl::load_encoder(const std::string& path,
                                       const std::array<int, 324>& unicode_to_byte) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(path, "GPT-2 encoder.json"));
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path + ": not valid JSON (expected GPT-2's encoder.json): " + e.what());
  }
  if (!json.is_object() || json.empty()) {
    throw Error(path + ": expected a JSON object mapping token strings to ids (GPT-2's "
                "encoder.json)");
  }
  token_bytes.assign(json.size(), std::string());
  std::vector<bool> seen(json.size(), false);
  std::string bytes;
  for (const auto& [symbol, value] : json.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= static_cast<int64_t>(json.size())) {
      throw Error(path + ": token '" + symbol + "' has id " + value.dump() + " (expected an "
                  "integer in 0.." + std::to_string(json.size() - 1) + ")");
    }
    const int id = value.get<int>();
    if (seen[id]) throw Error(path + ": id " + std::to_string(id) + " is used twice");
    seen[id] = true;
    if (!unmap(symbol, unicode_to_byte, bytes)) {
      throw Error(path + ": token '" + symbol + "' holds a character outside GPT-2's "
                  "byte alphabet (is this a GPT-2 encoder.json?)");
    }
    token_bytes[id] = bytes;
    encoder.emplace(bytes, id);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = encoder.find(std::string(1, static_cast<char>(b)));
    if (it == encoder.end()) {
      throw Error(path + ": no token for byte " + std::to_string(b) +
                  " (a byte-level BPE vocabulary has all 256)");
    }
    byte_token[b] = it->second;
  }
  const auto it = encoder.find("<|endoftext|>");
  eot = it == encoder.end() ? -1 : it->second;
}

void Gpt2Tokenizer::Impl::load_merges(const std::string& path,
                                      const std::array<int, 324>& unicode_to_byte) {
  std::istringstream in(read_file(path, "GPT-2 vocab.bpe merges"));
  std::string line, left, right;
  int line_no = 0, rank = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw Error(path + ":" + std::to_string(line_no) + ": expected two symbols separated "
                  "by one space (a merge of GPT-2's vocab.bpe), got '" + line + "'");
    }
    const std::string_view a = std::string_view(line).substr(0, space);
    const std::string_view b = std::string_view(line).substr(space + 1);
    std::string merged;
    int ids[2];
    for (int k = 0; k < 2; ++k) {
      if (!unmap(k == 0 ? a : b, unicode_to_byte, k == 0 ? left : right)) {
        throw Error(path + ":" + std::to_string(line_no) + ": '" + line + "' holds a "
                    "character outside GPT-2's byte alphabet");
      }
      const auto it = encoder.find(k == 0 ? left : right);
      if (it == encoder.end()) {
        throw Error(path + ":" + std::to_string(line_no) + ": symbol '" +
                    std::string(k == 0 ? a : b) + "' is not in the encoder.json vocabulary "
                    "(do encoder.json and vocab.bpe belong together?)");
      }
      ids[k] = it->second;
    }
    const auto it = encoder.find(left + right);
    if (it == encoder.end()) {
      throw Error(path + ":" + std::to_string(line_no) + ": the merge of '" + line +
                  "' is not in the encoder.json vocabulary (do the files belong together?)");
    }
    // A repeated pair takes its later rank, as in encoder.py's dict(zip(merges, ranks)).
    merges.insert_or_assign(key(ids[0], ids[1]), Merge{rank++, it->second});
  }
  if (merges.empty()) throw Error(path + ": holds no merges (expected GPT-2's vocab.bpe)");
}

std::vector<int> Gpt2Tokenizer::Impl::bpe(std::string_view piece) const {
  std::vector<int> word(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) word[i] = byte_token[static_cast<uint8_t>(piece[i])];

  // Quadratic in the piece length, which is fine: pieces are words, and the cache makes
  // each distinct piece cost this once.
  std::vector<int> merged_word;
  while (word.size() > 1) {
    const Merge* best = nullptr;
    int best_left = 0, best_right = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges.find(key(word[i], word[i + 1]));
      if (it != merges.end() && (!best || it->second.rank < best->rank)) {
        best = &it->second;
        best_left = word[i];
        best_right = word[i + 1];
      }
    }
    if (!best) break;
    // Merge every occurrence of the best pair, left to right, without overlaps.
    merged_word.clear();
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == best_left && word[i + 1] == best_right) {
        merged_word.push_back(best->result);
        i += 2;
      } else {
        merged_word.push_back(word[i++]);
      }
    }
    word.swap(merged_word);
  }
  return word;
}

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& encoder_json_path,
                             const std::string& vocab_bpe_path)
    : impl_(std::make_unique<Impl>()) {
  const std::array<char32_t, 256> to_unicode = bytes_to_unicode();
  std::array<int, 324> unicode_to_byte;  // the mapped characters are all below U+0144
  unicode_to_byte.fill(-1);
  for (int b = 0; b < 256; ++b) unicode_to_byte[to_unicode[b]] = b;

  impl_->load_encoder(encoder_json_path, unicode_to_byte);
  impl_->load_merges(vocab_bpe_path, unicode_to_byte);
  if (impl_->token_bytes.size() > 65536) {
    // Not a tokenizer limit, but every consumer of ours stores ids as uint16 shards.
    throw Error(encoder_json_path + ": " + std::to_string(impl_->token_bytes.size()) +
                " tokens do not fit uint16 token shards (at most 65536)");
  }
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::vector<int> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int> tokens;
  tokens.reserve(text.size() / 3);
  for (std::string_view piece : gpt2_pretokenize(text)) {
    auto it = impl_->cache.find(std::string(piece));
    if (it == impl_->cache.end()) {
      if (impl_->cache.size() >= Impl::kMaxCacheEntries) impl_->cache.clear();
      it = impl_->cache.emplace(std::string(piece), impl_->bpe(piece)).first;
    }
    tokens.insert(tokens.end(), it->second.begin(), it->second.end());
  }
  return tokens;
}

std::string Gpt2Tokenizer::decode(const std::vector<int>& tokens) const {
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int t = tokens[i];
    if (t < 0 || t >= vocab_size()) {
      throw Error("gpt2 tokenizer: token " + std::to_string(t) + " at index " +
                  std::to_string(i) + " is outside the vocabulary (expected 0.." +
                  std::to_string(vocab_size() - 1) + ")");
    }
    text += impl_->token_bytes[t];
  }
  return text;
}

int Gpt2Tokenizer::vocab_size() const { return static_cast<int>(impl_->token_bytes.size()); }

int Gpt2Tokenizer::eot_token() const { return impl_->eot; }

}  // namespace tessera
