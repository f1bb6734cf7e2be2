#!/usr/bin/python3
"""The PyTorch peer for `make bench`: the same GPT-2 (or Llama) shape, forward + backward + AdamW on
synthetic tokens, timed like `tessera bench` (median of the timed steps), in fp32 or with
the forward pass under torch.autocast('cpu', dtype=torch.bfloat16) (PyTorch's mixed
precision: bf16 matmuls through oneDNN, fp32 weights, gradients and AdamW).

The Llama (--model llama-114m) is written as Hugging Face's LlamaForCausalLM computes:
RMSNorm, rotary embeddings from cos/sin tables, key/value heads repeated for their query
heads, SwiGLU, no biases, the LM head tied to the embedding as recipes/llama-114m.yaml ties
it.

Usage: pytorch_gpt2.py --model gpt2-124m|small|tiny|llama-114m --batch B --seq T [--steps N]
                       [--threads 2] [--accum M] [--precision fp32|bf16]
                       [--device cpu|cuda] [--compile] [--find-batch] [--peak-tflops P]
Prints one JSON line, with the process's peak RSS. On the CPU, run it through
bench/peer.sh's torch_peer, PyTorch's tuned setting (BLAS, OpenMP, allocator), which also
passes --allocator-name so that the record says which allocator ran.

On a GPU (--device cuda) it runs as PyTorch's experts would: attention through
F.scaled_dot_product_attention (flash / cuDNN kernels), bf16 autocast, the fused AdamW,
TF32 for what stays fp32, the caching allocator with expandable segments, optionally
torch.compile (static shapes); --find-batch takes the largest micro-batch (of 64, 48, 32,
24, 16, 12, 8, 4, 2, 1) that fits, freeing each failed try's memory (and compiled graphs)
before the next; --peak-tflops (the bf16 GEMM peak gpu_bench measured) adds the model
FLOPs utilisation, counted as Tessera counts it.
"""
import argparse
import gc
import json
import os
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {  # must match bench_model() in framework/tools/bench.cpp
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, vocab=256, padded=256, seq=128),
    "small": dict(n_layer=6, n_head=6, n_embd=384, vocab=50257, padded=50304, seq=256),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, vocab=50257, padded=50304, seq=1024),
    "llama-114m": dict(family="llama", n_layer=12, n_head=12, n_kv_head=4, n_embd=768,
                       inter=2048, vocab=50257, padded=50304, seq=1024),
}


class Block(nn.Module):
    def __init__(self, C, H, sdpa):
        super().__init__()
        self.H, self.sdpa = H, sdpa
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.up, self.down = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.H))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, s, T, sdpa=False):
        super().__init__()
        self.vocab = s["vocab"]
        self.wte = nn.Embedding(s["padded"], s["n_embd"])
        self.wpe = nn.Embedding(T, s["n_embd"])  # the context is T, as in tessera bench
        self.h = nn.ModuleList(Block(s["n_embd"], s["n_head"], sdpa) for _ in range(s["n_layer"]))
        self.ln_f = nn.LayerNorm(s["n_embd"])

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[..., : self.vocab].reshape(-1, self.vocab), targets.reshape(-1))


class RMSNorm(nn.Module):
    def __init__(self, C, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(C)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):  # Hugging Face's apply_rotary_pos_emb (rotate_half)
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


class LlamaBlock(nn.Module):
    def __init__(self, C, H, KV, F_, sdpa):
        super().__init__()
        self.H, self.KV, self.hs, self.sdpa = H, KV, C // H, sdpa
        self.attn_norm, self.mlp_norm = RMSNorm(C), RMSNorm(C)
        self.q = nn.Linear(C, C, bias=False)
        self.k = nn.Linear(C, KV * self.hs, bias=False)
        self.v = nn.Linear(C, KV * self.hs, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.gate, self.up = nn.Linear(C, F_, bias=False), nn.Linear(C, F_, bias=False)
        self.down = nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, self.H, self.hs).transpose(1, 2)
        k = self.k(h).view(B, T, self.KV, self.hs).transpose(1, 2)
        v = self.v(h).view(B, T, self.KV, self.hs).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k, v = (t.repeat_interleave(self.H // self.KV, dim=1) for t in (k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hs))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, s, T, sdpa=False):
        super().__init__()
        self.vocab, C, H = s["vocab"], s["n_embd"], s["n_head"]
        self.wte = nn.Embedding(s["padded"], C)  # the LM head too (tied)
        self.h = nn.ModuleList(LlamaBlock(C, H, s["n_kv_head"], s["inter"], sdpa)
                               for _ in range(s["n_layer"]))
        self.norm = RMSNorm(C)
        hs = C // H
        inv_freq = 1.0 / 10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
        angles = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, idx, targets):
        x = self.wte(idx)
        for block in self.h:
            x = block(x, self.cos, self.sin)
        logits = self.norm(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[..., : self.vocab].reshape(-1, self.vocab), targets.reshape(-1))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def training_flops_per_token(s, T):
    """GPTConfig::training_flops_per_token (framework/model/gpt_model_setup.cpp)."""
    L, C, Vp = s["n_layer"], s["n_embd"], s["padded"]
    if s.get("family") == "llama":
        Ckv = s["n_kv_head"] * (C // s["n_head"])
        per_layer = 2 * C * C + 2 * C * Ckv + 3 * C * s["inter"]
    else:
        per_layer = 12.0 * C * C
    return 3.0 * (2.0 * (L * per_layer + C * Vp) + L * 4.0 * T * C)


def run(a, s, batch):
    """Times a.steps steps after a.warmup; returns the JSON record."""
    torch.manual_seed(0)
    cuda = a.device == "cuda"
    model = (Llama if s.get("family") == "llama" else GPT)(s, a.seq, sdpa=cuda).to(a.device)
    decay = [q for n, q in model.named_parameters() if q.dim() == 2 and "wte" not in n and "wpe" not in n]
    rest = [q for n, q in model.named_parameters() if not (q.dim() == 2 and "wte" not in n and "wpe" not in n)]
    # CPU: foreach=True, the multi-tensor AdamW, PyTorch's fastest on CPU in this version;
    # GPU: fused=True, one kernel for all parameters.
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), **({"fused": True} if cuda else {"foreach": True}))
    # Static shapes: each try is a new model, and a batch that changes between tries would
    # otherwise make Dynamo compile the timed graph for a dynamic batch size.
    step_model = torch.compile(model, dynamic=False) if a.compile else model
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    x = torch.randint(0, s["vocab"], (batch, a.seq), device=a.device)
    y = torch.randint(0, s["vocab"], (batch, a.seq), device=a.device)

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    fwd, bwd, optm, total = [], [], [], []
    for step in range(a.warmup + a.steps):
        t0 = now()
        opt.zero_grad(set_to_none=True)
        forward_s = backward_s = 0.0
        for _ in range(a.accum):
            ta = now()
            with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                loss = step_model(x, y) / a.accum
            tb = now()
            loss.backward()
            forward_s, backward_s = forward_s + tb - ta, backward_s + now() - tb
        t2 = now()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = now()
        if step >= a.warmup:
            fwd.append(forward_s * 1e3)
            bwd.append(backward_s * 1e3)
            optm.append((t3 - t2) * 1e3)
            total.append((t3 - t0) * 1e3)
    step_ms = median(total)
    tokens_per_s = a.accum * batch * a.seq / (step_ms / 1e3)
    record = {"engine": "pytorch " + torch.__version__ + (" compile" if a.compile else ""),
              "device": torch.cuda.get_device_name() if cuda else "cpu", "model": a.model,
              "batch": batch, "seq_len": a.seq, "threads": torch.get_num_threads(),
              "precision": a.precision, "micro_batches": a.accum, "tokens_per_s": tokens_per_s,
              "step_ms": step_ms, "forward_ms": median(fwd), "backward_ms": median(bwd),
              "optimizer_ms": median(optm), "allocator": a.allocator_name,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if cuda:
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if a.peak_tflops:
        record["mfu"] = tokens_per_s * training_flops_per_token(s, a.seq) / (a.peak_tflops * 1e12)
    return record


def out_of_memory(e):
    """Whether e says the GPU's memory ran out: the allocator's error, or a library's
    workspace (cuBLAS, cuDNN) failing near the limit."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e)
    return any(k in text for k in ("out of memory", "ALLOC_FAILED", "NOT_ENOUGH_WORKSPACE"))


def try_batch(a, s, batch):
    """run()'s record, or None when the batch does not fit. Returns from the handler, so
    that the exception's traceback, which holds the failed try's model, optimizer state and
    activations, is gone before the caller frees the cache."""
    try:
        return run(a, s, batch)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
        if not out_of_memory(e):
            raise
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2-124m", choices=SHAPES)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per step")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--find-batch", action="store_true", help="the largest micro-batch that fits")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="for the MFU")
    p.add_argument("--allocator-name", default="glibc", help="recorded only (bench/peer.sh sets it)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        # Read when CUDA first allocates: segments that grow instead of a new one per size,
        # so the sizes of a failed try do not fragment the next.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        a.allocator_name = "pytorch caching (" + os.environ["PYTORCH_CUDA_ALLOC_CONF"] + ")"
        torch.set_float32_matmul_precision("high")
    s = SHAPES[a.model]
    for batch in ((64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if a.find_batch else (a.batch,)):
        record = try_batch(a, s, batch)
        if record is None:
            gc.collect()
            if a.compile:
                torch._dynamo.reset()
            torch.cuda.empty_cache()
            continue
        print(json.dumps(record), flush=True)
        return
    raise SystemExit("pytorch_gpt2.py: not even a micro-batch of 1 fits")


if __name__ == "__main__":
    main()
