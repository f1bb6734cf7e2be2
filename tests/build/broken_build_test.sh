#!/usr/bin/env bash
# `make test` on a tree whose source does not compile must fail, show the compiler's
# error and run no test, even when an executable from an earlier build is in place.
# Works on a copy of the tracked tree with one kernel source broken (kernels build first,
# so the build fails within seconds) and a stale build/bin/tessera.
#   broken_build_test.sh SOURCE_DIR
set -uo pipefail
src=${1:?usage: broken_build_test.sh SOURCE_DIR}

# Should the Makefile ever let this build through, the inner ctest would start this test
# again; the variable stops that recursion.
if [[ -n ${TESSERA_IN_BROKEN_BUILD_TEST:-} ]]; then
  echo "skip: already inside the broken-build test"
  exit 77
fi
if ! git -C "$src" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  echo "skip: $src is not a git checkout, so its tracked files are unknown"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-broken-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
copy=$tmp/src
build=$tmp/build
mkdir -p "$copy"

# Tracked and new (not ignored) files, as the working tree has them; a tracked file that
# was deleted is skipped.
(cd "$src" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2> /dev/null) | tar -C "$copy" -xf -
# The tokenizer files are ignored by git; without them install-deps.sh would fetch them.
if [[ -d $src/build-deps ]]; then
  ln -s "$src/build-deps" "$copy/build-deps"
fi

broken=kernels/cpu/attention.cpp
[[ -f $copy/$broken ]] || { echo "FAIL: $broken not in the copy"; exit 1; }
echo 'int broken_build_test_marker = broken_build_test_undeclared;' >> "$copy/$broken"

mkdir -p "$build/bin"
printf '#!/bin/sh\necho "stale binary ran"\n' > "$build/bin/tessera"
chmod +x "$build/bin/tessera"

TESSERA_IN_BROKEN_BUILD_TEST=1 timeout 300 make -C "$copy" test BUILD="$build" > "$tmp/out.log" 2>&1
status=$?
cat "$tmp/out.log"
echo "--- make test exited with $status"

fail=0
if ((status == 0)); then
  echo "FAIL: make test succeeded on a tree that does not compile"; fail=1
fi
if ((status == 124)); then
  echo "FAIL: make test did not finish within 300 s"; fail=1
fi
if ! grep -q "error: .*broken_build_test_undeclared" "$tmp/out.log"; then
  echo "FAIL: the compiler's error is not in make's output"; fail=1
fi
if grep -qE "^Test project|tests passed|stale binary ran" "$tmp/out.log"; then
  echo "FAIL: tests ran after the build failed"; fail=1
fi
if grep -q "^installing:" "$tmp/out.log"; then
  echo "FAIL: make installed packages; the test expects the dependencies present"; fail=1
fi
((fail == 0)) && echo "PASS: the failed build failed make test, with the compiler's error"
exit $fail
