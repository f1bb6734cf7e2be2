// Byte tokenizer, the GPT-2 pre-tokenizer (hand-written regex) and the Unicode classes.
// The BPE against real GPT-2 files is in test_tokenizer_gpt2.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "framework/data/tokenizer.h"
#include "framework/data/unicode_classes.h"
#include "base/error.h"

using tessera::Error;

namespace {

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (auto p : tessera::gpt2_pretokenize(text)) out.emplace_back(p);
  return out;
}

using Pieces = std::vector<std::string>;

}  // namespace

TEST(TokenizerBytes, RoundTripsAnyBytes) {
  tessera::ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int> ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tok.decode(ids), all);
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_EQ(tok.eot_token(), -1);
  EXPECT_THROW(tok.decode({65, 256}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
}

TEST(TokenizerFactory, KindsAndErrors) {
  EXPECT_EQ(tessera::make_tokenizer("bytes", "", "")->vocab_size(), 256);
  EXPECT_THROW(tessera::make_tokenizer("sentencepiece", "", ""), Error);
  EXPECT_THROW(tessera::make_tokenizer("gpt2", "", ""), Error);
  EXPECT_THROW(tessera::make_tokenizer("bytes", "encoder.json", ""), Error);
  try {
    tessera::make_tokenizer("gpt2", "/nonexistent/encoder.json", "/nonexistent/vocab.bpe");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/encoder.json"), std::string::npos)
        << e.what();
  }
}

// Expected pieces worked out from the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (test_tokenizer_gpt2.cpp also compares against node's regex engine).
TEST(TokenizerGpt2Pretokenize, RegexAlternatives) {
  EXPECT_EQ(pieces("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pieces("don't I'll we've they're"),
            (Pieces{"don", "'t", " I", "'ll", " we", "'ve", " they", "'re"}));
  EXPECT_EQ(pieces("IT'S"), (Pieces{"IT", "'", "S"}));  // contractions are lowercase only
  EXPECT_EQ(pieces(" 's"), (Pieces{" '", "s"}));
  EXPECT_EQ(pieces("x 123 4.5!!"), (Pieces{"x", " 123", " 4", ".", "5", "!!"}));
  EXPECT_EQ(pieces("a1b"), (Pieces{"a", "1", "b"}));
}

TEST(TokenizerGpt2Pretokenize, WhitespaceRunsLeaveOneSpaceForTheNextWord) {
  EXPECT_EQ(pieces("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(pieces("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pieces("a \n b"), (Pieces{"a", " \n", " b"}));
  EXPECT_EQ(pieces("end   "), (Pieces{"end", "   "}));  // at the end: the whole run
  EXPECT_EQ(pieces("\tx"), (Pieces{"\t", "x"}));       // only U+0020 joins the next word
  EXPECT_EQ(pieces(""), Pieces{});
}

TEST(TokenizerGpt2Pretokenize, UnicodeLettersNumbersAndBadBytes) {
  EXPECT_EQ(pieces("caf\u00e9 na\u00efve \u65e5\u672c"),
            (Pieces{"caf\u00e9", " na\u00efve", " \u65e5\u672c"}));
  EXPECT_EQ(pieces("\u00bd\u2167x"), (Pieces{"\u00bd\u2167", "x"}));  // No, Nl are numbers
  EXPECT_EQ(pieces("a\u00a0b"), (Pieces{"a", "\u00a0", "b"}));       // NBSP is whitespace
  // Invalid UTF-8 bytes are "other" characters; the pieces still cover every byte.
  EXPECT_EQ(pieces("a\xff\xfe b"), (Pieces{"a", "\xff\xfe", " b"}));
}

TEST(TokenizerUnicode, ClassesAndDecoding) {
  using namespace tessera::unicode;
  EXPECT_TRUE(is_letter(U'A'));
  EXPECT_TRUE(is_letter(U'\u00e9'));    // é
  EXPECT_TRUE(is_letter(U'\u0416'));    // Cyrillic Zhe
  EXPECT_TRUE(is_letter(U'\u65e5'));    // CJK
  EXPECT_FALSE(is_letter(U'1'));
  EXPECT_FALSE(is_letter(U'\u00d7'));   // multiplication sign, inside the Latin-1 letters
  EXPECT_TRUE(is_number(U'\u0663'));    // Arabic-Indic three
  EXPECT_FALSE(is_number(U'x'));
  EXPECT_TRUE(is_whitespace(U'\u3000'));
  EXPECT_FALSE(is_whitespace(U'\u200b'));  // zero-width space is not White_Space

  const std::string s = "a\u00e9\u65e5\U0001F642";
  EXPECT_EQ(decode_utf8(s, 0).code_point, U'a');
  EXPECT_EQ(decode_utf8(s, 1).code_point, U'\u00e9');
  EXPECT_EQ(decode_utf8(s, 1).length, 2u);
  EXPECT_EQ(decode_utf8(s, 3).length, 3u);
  EXPECT_EQ(decode_utf8(s, 6).code_point, U'\U0001F642');
  EXPECT_EQ(decode_utf8("\xc0\x80", 0).code_point, kInvalid);  // overlong NUL
  EXPECT_EQ(decode_utf8("\xed\xa0\x80", 0).code_point, kInvalid);  // surrogate
  EXPECT_EQ(decode_utf8("\xe6\x97", 0).code_point, kInvalid);  // cut short
  EXPECT_EQ(decode_utf8("\xe6\x97", 0).length, 1u);
}
