// Regenerates the code-point range tables of framework/data/unicode_classes.cpp from the
// Unicode data built into node's regular expressions (\p{L} letters, \p{N} numbers).
//   node framework/data/gen_unicode_classes.js > /tmp/tables.txt
// then paste the two arrays over the ones in unicode_classes.cpp. The tables are data,
// not code: regenerating them only moves the Unicode version forward.
'use strict';

function ranges(re) {
  const out = [];
  let start = -1;
  for (let c = 0; c <= 0x110000; c++) {
    const hit = c < 0x110000 && re.test(String.fromCodePoint(c));
    if (hit && start < 0) start = c;
    if (!hit && start >= 0) { out.push([start, c - 1]); start = -1; }
  }
  return out;
}

function emit(name, list) {
  const hex = (x) => '0x' + x.toString(16).toUpperCase().padStart(4, '0');
  const cells = list.map(([a, b]) => `{${hex(a)}, ${hex(b)}}`);
  const lines = [];
  for (let i = 0; i < cells.length; i += 5) lines.push('    ' + cells.slice(i, i + 5).join(', ') + ',');
  return `// ${list.length} ranges\nconstexpr Range ${name}[] = {\n${lines.join('\n')}\n};\n`;
}

console.log(`// Unicode ${process.versions.unicode} (node ${process.version})`);
console.log(emit('kLetterRanges', ranges(/^\p{L}$/u)));
console.log(emit('kNumberRanges', ranges(/^\p{N}$/u)));
