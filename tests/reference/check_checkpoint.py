#!/usr/bin/python3
"""Reads a Tessera checkpoint with h5py, an HDF5 reader independent of our C++ code.

Usage: check_checkpoint.py CKPT EXPECTED_JSON

CKPT is a step directory (holding index.h5) or a parent directory holding `latest`.
EXPECTED_JSON, written by tests/unit/test_checkpoint.cpp:
  {"step", "tokens_seen", "data_position", "run_id", "recipe_yaml", "layout",
   "tensors": {name: {"shape": [...], "sum": float64 sum in C order, "first": [...]}}}

Checks the index's metadata, that /tensors holds exactly the expected names, and for
each tensor: that it is a virtual dataset whose source files exist, its shape, its first
values (exactly), its sum, and for each of its pieces (virtual sources): that the box of
the tensor it maps to equals the source dataset read from the shard directly, and that
XXH64 of the piece's little-endian float32 bytes matches the piece's checksum
attribute. Prints "ok: ..." and exits 0, or prints every problem and exits 1.
"""
import json
import math
import os
import sys

import h5py
import numpy as np
import xxhash  # python3-xxhash, the reference implementation


def xxh64(data: bytes) -> int:
    return xxhash.xxh64(data, seed=0).intdigest()


def text(value) -> str:
    """Fixed-length HDF5 strings come back from h5py as numpy bytes."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def resolve(path: str) -> str:
    if os.path.isfile(os.path.join(path, "index.h5")):
        return path
    with open(os.path.join(path, "latest")) as f:
        return os.path.join(path, f.read().strip())


def main() -> int:
    ckpt_dir = resolve(sys.argv[1])
    with open(sys.argv[2]) as f:
        expected = json.load(f)
    problems = []

    def expect(cond, message):
        if not cond:
            problems.append(message)

    with h5py.File(os.path.join(ckpt_dir, "index.h5"), "r") as f:
        expect(text(f.attrs["format"]) == "tessera-checkpoint", f"format is {f.attrs['format']!r}")
        expect(int(f.attrs["format_version"]) == 2, "format_version is not 2")
        for key in ("step", "tokens_seen", "data_position"):
            expect(int(f.attrs[key]) == expected[key], f"{key}: {f.attrs[key]} != {expected[key]}")
        expect(text(f.attrs["run_id"]) == expected["run_id"], "run_id differs")
        expect(text(f["meta/recipe_yaml"][()]) == expected["recipe_yaml"], "recipe_yaml differs")
        expect(json.loads(text(f["meta/layout_json"][()])) == expected["layout"], "layout differs")

        names = sorted(f["tensors"].keys())
        expect(names == sorted(expected["tensors"]), f"tensors {names} != {sorted(expected['tensors'])}")
        for name, want in expected["tensors"].items():
            if name not in f["tensors"]:
                continue
            ds = f["tensors"][name]
            expect(ds.is_virtual, f"{name}: not a virtual dataset")
            arr = ds[()]
            expect(arr.dtype == np.float32, f"{name}: dtype {arr.dtype}")
            expect(list(arr.shape) == want["shape"], f"{name}: shape {list(arr.shape)} != {want['shape']}")
            flat = arr.reshape(-1).astype(np.float64)
            expect(list(flat[: len(want["first"])]) == want["first"],
                   f"{name}: first values {list(flat[:len(want['first'])])} != {want['first']}")
            total = float(flat.sum())
            expect(math.isclose(total, want["sum"], rel_tol=1e-9, abs_tol=1e-9),
                   f"{name}: sum {total} != {want['sum']}")
            covered = 0
            for source in ds.virtual_sources():
                shard = os.path.join(ckpt_dir, source.file_name)
                expect(os.path.isfile(shard), f"{name}: source file {source.file_name} missing")
                if not os.path.isfile(shard):
                    continue
                start, end = source.vspace.get_select_bounds()
                box = arr[tuple(slice(a, b + 1) for a, b in zip(start, end))]
                covered += box.size
                with h5py.File(shard, "r") as s:
                    piece = s[source.dset_name]
                    expect(text(piece.attrs["tensor"]) == name,
                           f"{name}: {source.file_name}:{source.dset_name} says it is {piece.attrs['tensor']!r}")
                    data = piece[()]
                    expect(np.array_equal(data, box, equal_nan=True),
                           f"{name}: differs from {source.file_name}:{source.dset_name}")
                    checksum = "xxh64:%016x" % xxh64(data.astype("<f4").tobytes())
                    expect(text(piece.attrs["checksum"]) == checksum,
                           f"{name}: checksum of {source.dset_name} {text(piece.attrs['checksum'])} "
                           f"!= recomputed {checksum}")
            expect(covered == arr.size, f"{name}: pieces cover {covered} of {arr.size} elements")

    if problems:
        for p in problems:
            print("check_checkpoint:", p, file=sys.stderr)
        return 1
    print(f"ok: {len(expected['tensors'])} tensors in {ckpt_dir} read with h5py {h5py.version.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
