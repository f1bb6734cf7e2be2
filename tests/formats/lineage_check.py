#!/usr/bin/env python3
"""Lineage of an export and `tessera runs`, each link checked against the files here.

  lineage_check.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

A run trains and checkpoints; its checkpoint is exported to GGUF (and to safetensors).

  chain     `tessera runs show FILE.gguf` exits 0 and prints: the file with its sha256
            (hashlib of the file here), the checkpoint with its fingerprint (XXH64 of the
            shard checksums read with h5py from index.h5, computed here), the run id and run
            log (whose run_start holds that id), and every training data file with its
            sha256 (hashlib here). The lineage file holds the same, and the run's log ends
            with an `export` event naming the file and its sha256.
  tampered  after one byte of a data file changes, `runs show` marks that link CHANGED and
            exits 1.
  runs      `tessera runs list --log-dir` lists the run with its status, steps, last loss
            and latest checkpoint; `tessera runs show RUN_ID` prints its data files, its
            checkpoints and both exports.
Standard library + h5py + xxhash. Exit code 0 = pass.
"""
import hashlib
import json
import os
import re
import sys
import tempfile

import h5py
import xxhash

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, parse_options  # noqa: E402
from safetensors_check import export, train, prepare  # noqa: E402


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def fingerprint(step_dir):
    with h5py.File(os.path.join(step_dir, "index.h5"), "r") as f:
        shards = json.loads(f["meta"]["shards_json"][()].decode())
    sums = "".join(s["checksum"] + "\n" for s in shards).encode()
    return "xxh64:%016x" % xxhash.xxh64(sums).intdigest()


def expect_line(text, pattern, what):
    if not re.search(pattern, text, re.M):
        fail("%s: no line matching %r in:\n%s" % (what, pattern, text))


def main():
    opt = parse_options(__doc__)
    with tempfile.TemporaryDirectory(prefix="tessera_lineage_") as work:
        data = prepare(opt, work, "bytes", ["--tokenizer", "bytes"])
        ckpt = train(opt, work, "base", 1, [
            "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
            "data.train=" + data, "train.steps=12", "train.global_batch=4", "train.micro_batch=4",
            "optim.warmup_steps=2", "checkpoint.every=6"])
        gguf = os.path.join(work, "model.gguf")
        export(opt, work, ckpt, gguf)
        export(opt, work, ckpt, os.path.join(work, "model-hf"))
        step_dir = os.path.join(ckpt, open(os.path.join(ckpt, "latest")).read().strip())
        runs_dir = os.path.join(work, "runs_base")
        (run_id,) = os.listdir(runs_dir)
        run_log = os.path.join(runs_dir, run_id, "run.jsonl")
        events = [json.loads(l) for l in open(run_log)]
        data_files = [f["path"] for f in events[0]["data"]["files"]]

        p = run([opt.tessera, "runs", "show", gguf], work, 120)
        if p.returncode != 0:
            fail("runs show on the export failed\n" + show(p))
        text = p.stdout
        expect_line(text, r"file %s sha256 %s \[ok\]" % (re.escape(os.path.abspath(gguf)), sha256(gguf)), "export link")
        expect_line(text, r"<- checkpoint %s step 12 fingerprint %s \[ok\]"
                    % (re.escape(os.path.abspath(step_dir)), re.escape(fingerprint(step_dir))), "checkpoint link")
        if events[0]["run_id"] != run_id:
            fail("the run log's run_start says run %s, its directory %s" % (events[0]["run_id"], run_id))
        expect_line(text, r"<- run %s log %s \[ok\]" % (run_id, re.escape(os.path.abspath(run_log))), "run link")
        for f in data_files:
            expect_line(text, r"<- data %s sha256 %s \[ok\]" % (re.escape(f), sha256(f)), "data link")
        expect_line(text, r"^every link matches the files$", "verdict")
        lineage = json.load(open(gguf + ".lineage.json"))
        if lineage["export"]["files"][0]["sha256"] != sha256(gguf) or \
                lineage["checkpoint"]["fingerprint"] != fingerprint(step_dir) or \
                [f["sha256"] for f in lineage["run"]["data"]] != [sha256(f) for f in data_files]:
            fail("the lineage file does not match the files: %s" % json.dumps(lineage)[:2000])
        exports = [e for e in (json.loads(l) for l in open(run_log)) if e["event"] == "export"]
        if len(exports) != 2 or exports[0]["files"][0]["sha256"] != sha256(gguf):
            fail("the run log's export events: %s" % exports)
        print("  chain: %s -> checkpoint %s (fingerprint %s) -> run %s -> %d data file(s), every link"
              " checked here" % (os.path.basename(gguf), os.path.basename(step_dir), fingerprint(step_dir),
                                 run_id, len(data_files)))

        listing = run([opt.tessera, "runs", "list", "--log-dir", runs_dir], work, 60)
        expect_line(listing.stdout, r"^%s .* ok +12 +[0-9.]+ +2 +2 +%s$" % (run_id, re.escape(step_dir)),
                    "runs list")
        shown = run([opt.tessera, "runs", "show", run_id, "--log-dir", runs_dir], work, 60)
        for pattern in [r"checkpoint step 6: ", r"checkpoint step 12: ", r"export \(gguf f32\)",
                        r"export \(safetensors f32\)"] + [r"data \(train\): %s sha256 %s" % (re.escape(f), sha256(f))
                                                          for f in data_files]:
            expect_line(shown.stdout, pattern, "runs show RUN")
        print("  runs: list and show name the run's checkpoints, exports and data")

        with open(data_files[0], "r+b") as f:
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 1]))
        p = run([opt.tessera, "runs", "show", gguf], work, 120)
        if p.returncode != 1:
            fail("runs show after a data file changed: exit %d, expected 1\n%s" % (p.returncode, show(p)))
        expect_line(p.stdout, r"<- data %s sha256 %s \[CHANGED" % (re.escape(data_files[0]), sha256_before_change(lineage)), "tampered")
        print("  tampered: a changed data file is marked CHANGED, exit 1")
    print("PASS")


def sha256_before_change(lineage):
    return lineage["run"]["data"][0]["sha256"]


if __name__ == "__main__":
    main()
