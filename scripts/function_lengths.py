#!/usr/bin/env python3
"""Lists every C++ function definition under the given folders (or files) with its length
in lines, from the first line of its signature to its closing brace.

    scripts/function_lengths.py framework/train framework/model
    scripts/function_lengths.py --max 80 framework/train   # only longer ones; exit 1 if any

Functions are found by brace matching after comments, string and character literals
(raw strings included) and preprocessor lines are blanked out. A brace opens a function
body when the text before it, in namespace or class scope, ends like a signature: a
closing parenthesis, optionally followed by qualifiers, a trailing return type or a
constructor's initializer list. Class, struct and namespace bodies are searched for
member functions; lambdas and local classes count towards the function around them.
"""
import argparse
import os
import re
import signal
import sys

SOURCE_EXTENSIONS = (".cpp", ".cc", ".cxx", ".h", ".hpp", ".cu", ".cuh")


def digit_separator(text, i):
    """Whether the quote at text[i] separates digits (1'000'000) rather than opening a
    character literal (U's')."""
    j = i - 1
    while j >= 0 and (text[j].isalnum() or text[j] in "'_"):
        j -= 1
    return j + 1 < i and text[j + 1].isdigit()


def blank(text):
    """text with comments, literals and preprocessor lines turned into spaces (newlines
    kept, so positions and line numbers stay those of the file)."""
    out = list(text)
    n = len(text)
    i = 0
    line_start = True

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if line_start and c == "#":  # a directive, with its continuation lines
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                if text.startswith("/*", j):  # a comment inside the directive
                    e = text.find("*/", j + 2)
                    j = n if e < 0 else e + 2
                    continue
                j += 1
            wipe(i, j)
            i = j
            continue
        if c == "\n":
            line_start = True
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            wipe(i, j)
            i = j
        elif c == "R" and i + 1 < n and text[i + 1] == '"' and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_") or text[i - 1] in "uUL8"):
            m = re.match(r'R"([^()\\\s]{0,16})\(', text[i:])
            if not m:
                i += 1
                continue
            end = text.find(")" + m.group(1) + '"', i + m.end())
            j = n if end < 0 else end + len(m.group(1)) + 2
            wipe(i + 1, j)
            out[i] = '"'
            out[j - 1] = '"'
            i = j
        elif c == '"' or (c == "'" and not digit_separator(text, i)):
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            wipe(i + 1, j - 1)
            i = j
        else:
            i += 1
    return "".join(out)


QUALIFIERS = r"(?:\s*(?:const|volatile|noexcept(?:\s*\([^()]*\))?|override|final|mutable|&&|&|"
QUALIFIERS += r"->\s*[\w:<>,\s*&\[\]]+|requires\b.*))*"
SIGNATURE_END = re.compile(r"\)" + QUALIFIERS + r"\s*$", re.S)
INITIALIZER_LIST = re.compile(r"\)" + QUALIFIERS + r"\s*:(?!:)", re.S)
SCOPE = re.compile(r"(?:^|[\s;])(?:namespace\b[\w:\s]*|extern\s*\"\"\s*)$|\b(?:class|struct|union)\b[^()]*$", re.S)
NAME = re.compile(r"((?:[\w~]+\s*(?:<[^()]*>)?\s*::\s*)*(?:operator\s*(?:\(\)|[^\s(]+)|~?\w+))\s*\(")


def match_brace(code, i):
    """Index of the brace closing the one at code[i]."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def function_name(header):
    m = NAME.search(header)
    if not m:
        return " ".join(header.split())[:60]
    name = re.sub(r"\s+", "", m.group(1))
    if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):  # a macro such as TEST(Suite, Name)
        close = header.find(")", m.end())
        name += "(" + " ".join(header[m.end():close].split()) + ")"
    return name


def functions(path):
    """(name, first line, last line) of every function defined in the file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    code = blank(text)
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    found = []

    def scan(lo, hi):
        header_start = lo
        parens = 0  # braces inside parentheses (default arguments) belong to the header
        i = lo
        while i < hi:
            c = code[i]
            if c == "(":
                parens += 1
            elif c == ")":
                parens = max(0, parens - 1)
            elif c == "{" and parens > 0:
                i = match_brace(code, i)
            elif c in ";}":
                header_start = i + 1
            elif c == "{":
                header = code[header_start:i]
                end = match_brace(code, i)
                stripped = header.strip()
                if SCOPE.search(stripped) and "=" not in stripped.split("{")[0]:
                    scan(i + 1, end)  # a namespace or class: look inside
                    header_start = end + 1
                elif INITIALIZER_LIST.search(stripped) and re.search(r"[\w>]$", stripped):
                    pass  # a member initialised with braces: the header goes on
                elif SIGNATURE_END.search(stripped) or (
                        INITIALIZER_LIST.search(stripped) and re.search(r"[)}]$", stripped)):
                    first = header_start + (len(header) - len(header.lstrip()))
                    found.append((function_name(stripped), line_of(first), line_of(end)))
                    header_start = end + 1
                else:
                    header_start = end + 1  # an initializer, enum, or the like
                i = end
            i += 1

    scan(0, len(code))
    return found


def source_files(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(SOURCE_EXTENSIONS):
                    yield os.path.join(root, name)


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="folders or files")
    parser.add_argument("--max", type=int, default=None,
                        help="print only functions longer than MAX lines; exit 1 if any")
    parser.add_argument("--exclude", action="append", default=[],
                        help="skip files whose path ends with this (repeatable)")
    args = parser.parse_args()
    too_long = 0
    for path in source_files(args.paths):
        if any(path.endswith(e) for e in args.exclude):
            continue
        for name, first, last in functions(path):
            length = last - first + 1
            if args.max is not None and length <= args.max:
                continue
            too_long += 1
            print(f"{length:5d}  {path}:{first}  {name}")
    if args.max is not None and too_long:
        print(f"{too_long} function(s) longer than {args.max} lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
