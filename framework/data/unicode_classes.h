// The three Unicode character classes GPT-2's pre-tokenizer regex needs (\p{L}, \p{N}
// and \s), and a forgiving UTF-8 decoder. C++'s <regex> knows none of \p{...}, so the
// GPT-2 tokenizer (gpt2_bpe.cpp) matches its regex by hand with these predicates.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tessera::unicode {

// Letter: general category L (Lu, Ll, Lt, Lm, Lo), from full Unicode tables.
bool is_letter(char32_t c);
// Number: general category N (Nd, Nl, No), e.g. '7', '½', 'Ⅻ', '٣'.
bool is_number(char32_t c);
// Whitespace: the Unicode White_Space property (what Python's `regex` module, which
// GPT-2's encoder.py uses, means by \s): \t \n \v \f \r, space, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool is_whitespace(char32_t c);

// Marks a byte that is not valid UTF-8. Decoding never fails: an invalid byte decodes
// to this value with length 1, so byte-level tokenizers still round-trip any input.
inline constexpr char32_t kInvalid = 0xFFFFFFFF;

struct Decoded {
  char32_t code_point;  // kInvalid for a malformed byte
  std::size_t length;   // bytes consumed, 1..4
};

// Decodes the code point that starts at text[pos] (pos < text.size()). Rejects overlong
// forms, surrogates and values above U+10FFFF (each such byte decodes as kInvalid).
Decoded decode_utf8(std::string_view text, std::size_t pos);

}  // namespace tessera::unicode
