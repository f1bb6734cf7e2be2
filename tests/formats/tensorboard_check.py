#!/usr/bin/env python3
"""TensorBoard event files against run.jsonl, read by code that shares nothing with Tessera's.

  tensorboard_check.py --tessera BIN --mpirun MPIRUN [--source-dir DIR]

A 2-rank (dp = 2) fp16 run with validation and log.tensorboard=true writes one event file
(rank 0 only) beside its run.jsonl. Every record's framing is checked with a CRC-32C
written here (bitwise, no table; checked against the standard vector crc32c("123456789") =
0xE3069283) and every Event is decoded by python3-protobuf from a schema built here
with TensorBoard's field numbers. The first event is the file version "brain.Event:2";
the scalars are exactly the numbers of the run log: for every metric line each finite
number as "train/<key>", for every eval line as "eval/<key>", at the line's step, with
the value rounded to float32 — none missing, none extra.
Standard library + python3-protobuf. Exit code 0 = pass.
"""
import math
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, prepare_data, train_args, read_log, parse_options  # noqa: E402

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402


def crc32c(data):
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def masked(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    """tensorflow.Event with the fields TensorBoard's scalars use (event.proto, summary.proto)."""
    f = descriptor_pb2.FileDescriptorProto(name="tb_event_check.proto", package="tbcheck")
    T = descriptor_pb2.FieldDescriptorProto
    value = f.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=T.TYPE_FLOAT, label=T.LABEL_OPTIONAL)
    summary = f.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=T.TYPE_MESSAGE, type_name=".tbcheck.Value",
                      label=T.LABEL_REPEATED)
    event = f.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=T.TYPE_MESSAGE, type_name=".tbcheck.Summary",
                    label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    descriptor = pool.FindMessageTypeByName("tbcheck.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def read_records(path):
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            fail("%s: a truncated record header at byte %d" % (path, pos))
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked(crc32c(header)):
            fail("%s: the length CRC of the record at byte %d is wrong" % (path, pos))
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if len(body) != length or body_crc != masked(crc32c(body)):
            fail("%s: the data CRC of the record at byte %d is wrong" % (path, pos))
        records.append(body)
        pos += 16 + length
    return records


def expected_scalars(events):
    want = {}
    for e in events:
        prefix = {"metric": "train/", "eval": "eval/"}.get(e["event"])
        if not prefix:
            continue
        for key, value in e.items():
            if key in ("event", "schema_version", "time", "step") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                want[(prefix + key, e["step"])] = struct.unpack("<f", struct.pack("<f", value))[0]
    return want


def main():
    opt = parse_options(__doc__)
    if crc32c(b"123456789") != 0xE3069283:
        fail("the reference CRC-32C here is wrong")
    Event = event_class()
    with tempfile.TemporaryDirectory(prefix="tessera_tb_") as work:
        prepare_data(opt.tessera, work)
        cmd = [opt.mpirun, "-n", "2"] + train_args(opt.tessera, opt.source_dir, work, "tb", [
            "parallel.dp=2", "train.precision=fp16", "log.tensorboard=true"])
        p = run(cmd, work, 300)
        if p.returncode != 0:
            fail("the run failed\n" + show(p))
        events = read_log(work, "tb")
        run_dir = os.path.join(work, "runs_tb", os.listdir(os.path.join(work, "runs_tb"))[0])
        files = [f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents.")]
        if len(files) != 1:
            fail("expected one event file in %s (rank 0 writes), found %s" % (run_dir, files))
        records = read_records(os.path.join(run_dir, files[0]))
        first = Event.FromString(records[0])
        if first.file_version != "brain.Event:2" or first.wall_time <= 0:
            fail("the first event is not the file version: %s" % first)
        got = {}
        for body in records[1:]:
            e = Event.FromString(body)
            if len(e.summary.value) != 1 or e.wall_time <= 0:
                fail("expected one scalar per event with a wall time, got %s" % e)
            v = e.summary.value[0]
            key = (v.tag, e.step)
            if key in got:
                fail("scalar %s at step %d written twice" % key)
            got[key] = v.simple_value
        want = expected_scalars(events)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            fail("scalars missing from the event file: %s; not in run.jsonl: %s" % (missing[:5], extra[:5]))
        wrong = [(k, want[k], got[k]) for k in want if want[k] != got[k]]
        if wrong:
            fail("scalars that differ from run.jsonl (tag, step), run log, event file: %s" % wrong[:5])
        tags = sorted({k[0] for k in got})
        for needed in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu",
                       "train/loss_scale", "eval/val_loss"):
            if needed not in tags:
                fail("no %s scalar (tags: %s)" % (needed, tags))
        print("  %s: %d records, CRCs good; %d scalars = the run log's numbers exactly (tags %s)"
              % (files[0], len(records), len(got), ", ".join(tags)))
    print("PASS")


if __name__ == "__main__":
    main()
