#!/usr/bin/python3
"""The PyTorch peer for `make bench`: the same GPT-2 shape, forward + backward + AdamW on
synthetic tokens, timed like `tessera bench` (median of the timed steps), in fp32 or with
the forward pass under torch.autocast('cpu', dtype=torch.bfloat16) (PyTorch's mixed
precision: bf16 matmuls through oneDNN, fp32 weights, gradients and AdamW).

Usage: pytorch_gpt2.py --model gpt2-124m|small|tiny --batch B --seq T [--steps N]
                       [--threads 2] [--accum M] [--precision fp32|bf16]
Prints one JSON line. Run it in PyTorch's tuned setting (see bench/compare.sh):
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, OMP_WAIT_POLICY=PASSIVE.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {  # must match bench_model() in framework/tools/bench.cpp
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, vocab=256, padded=256, seq=128),
    "small": dict(n_layer=6, n_head=6, n_embd=384, vocab=50257, padded=50304, seq=256),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, vocab=50257, padded=50304, seq=1024),
}


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.up, self.down = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.H))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, s, T):
        super().__init__()
        self.vocab = s["vocab"]
        self.wte = nn.Embedding(s["padded"], s["n_embd"])
        self.wpe = nn.Embedding(T, s["n_embd"])  # the context is T, as in tessera bench
        self.h = nn.ModuleList(Block(s["n_embd"], s["n_head"]) for _ in range(s["n_layer"]))
        self.ln_f = nn.LayerNorm(s["n_embd"])

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[..., : self.vocab].reshape(-1, self.vocab), targets.reshape(-1))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    s = SHAPES[a.model]
    model = GPT(s, a.seq)
    decay = [q for n, q in model.named_parameters() if q.dim() == 2 and "wte" not in n and "wpe" not in n]
    rest = [q for n, q in model.named_parameters() if not (q.dim() == 2 and "wte" not in n and "wpe" not in n)]
    # foreach=True: the multi-tensor AdamW, PyTorch's fastest on CPU in this version.
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), foreach=True)
    x = torch.randint(0, s["vocab"], (a.batch, a.seq))
    y = torch.randint(0, s["vocab"], (a.batch, a.seq))
    fwd, bwd, optm, total = [], [], [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        forward_s = backward_s = 0.0
        for _ in range(a.accum):
            ta = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                loss = model(x, y) / a.accum
            tb = time.perf_counter()
            loss.backward()
            forward_s, backward_s = forward_s + tb - ta, backward_s + time.perf_counter() - tb
        t1, t2 = t0 + forward_s, time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        if step >= a.warmup:
            fwd.append(forward_s * 1e3)
            bwd.append(backward_s * 1e3)
            optm.append((t3 - t2) * 1e3)
            total.append((t3 - t0) * 1e3)
    step_ms = median(total)
    print(json.dumps({"engine": "pytorch " + torch.__version__, "model": a.model, "batch": a.batch,
                      "seq_len": a.seq, "threads": torch.get_num_threads(),
                      "precision": a.precision, "micro_batches": a.accum,
                      "tokens_per_s": a.accum * a.batch * a.seq / (step_ms / 1e3), "step_ms": step_ms,
                      "forward_ms": median(fwd), "backward_ms": median(bwd), "optimizer_ms": median(optm)}))


if __name__ == "__main__":
    main()
