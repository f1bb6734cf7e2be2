#!/usr/bin/python3
"""PyTorch reference for Tessera's GPT-2 and llama families: same weights, same batch,
independent code.

Usage: gpt2_reference.py DIR

DIR holds what the C++ test wrote:
  config.json   model family and shape, batch shape, optimizer settings, number of steps
  params.json   [{"name", "shape", "offset"}] for each tensor in params.bin (float32)
  params.bin    the initial weights
  inputs.bin    int32 [steps, B, T] token ids;  targets.bin the same shape

and this script writes back:
  ref_logits.bin  float32 [B, T, Vp] logits of batch 0 at the initial weights
  ref_grads.bin   float32, laid out like params.bin: gradient of batch 0's mean loss
  ref.json        {"loss": loss of batch 0, "losses": [loss before each of `steps`
                   AdamW updates, on batch s, with clipping and the lr schedule]}

The model is written with torch.nn.functional ops and autograd, and the optimizer is
torch.optim.AdamW with torch.nn.utils.clip_grad_norm_, so nothing is shared with the
C++ code except the weight names and the documented schedule formula. The llama model is
written as Hugging Face's LlamaForCausalLM computes (rotate-half rotary embeddings, key and
value heads repeated for their query heads), with the rotary angles in float64, as
Tessera's table documents (Hugging Face computes them in float32).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def gpt2_forward(P, cfg, idx):
    L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    B, T = idx.shape
    hs = C // H
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        p = lambda n: P[f"h.{l}.{n}"]
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps=1e-5)
        q, k, v = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps=1e-5)
        h = F.gelu(F.linear(h, p("mlp.up.weight"), p("mlp.up.bias")), approximate="tanh")
        x = x + F.linear(h, p("mlp.down.weight"), p("mlp.down.bias"))
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps=1e-5)
    return x @ P["wte.weight"].t()  # tied LM head, [B, T, Vp]


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotary(x, theta):
    """x [B, heads, T, hs] rotated by position t * theta^(-2i/hs), rotate-half pairs."""
    T, hs = x.shape[2], x.shape[3]
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rotated = torch.cat([-x[..., hs // 2:], x[..., :hs // 2]], dim=-1)
    return x * cos + rotated * sin


def llama_forward(P, cfg, idx):
    L, H, KV, C = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"]
    eps, theta = cfg["norm_eps"], cfg["rope_theta"]
    B, T = idx.shape
    hs = C // H
    x = P["tok_embeddings.weight"][idx]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        p = lambda n: P[f"h.{l}.{n}"]
        h = rms_norm(x, p("attn_norm.weight"), eps)
        q = F.linear(h, p("attn.q.weight")).view(B, T, H, hs).transpose(1, 2)
        k = F.linear(h, p("attn.k.weight")).view(B, T, KV, hs).transpose(1, 2)
        v = F.linear(h, p("attn.v.weight")).view(B, T, KV, hs).transpose(1, 2)
        q, k = rotary(q, theta), rotary(k, theta)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, p("attn.o.weight"))
        h = rms_norm(x, p("mlp_norm.weight"), eps)
        h = F.silu(F.linear(h, p("mlp.gate.weight"))) * F.linear(h, p("mlp.up.weight"))
        x = x + F.linear(h, p("mlp.down.weight"))
    x = rms_norm(x, P["norm.weight"], eps)
    head = P["tok_embeddings.weight"] if cfg["tied"] else P["lm_head.weight"]
    return x @ head.t()


def model_forward(P, cfg, idx):
    return llama_forward(P, cfg, idx) if cfg["family"] == "llama" else gpt2_forward(P, cfg, idx)


def mean_loss(logits, targets, V):
    # Only the first V columns are real tokens; the padded ones are masked out.
    return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))


def learning_rate(o, step, total):
    """llm.c's schedule, as Tessera documents it in framework/optim/adamw.h."""
    if step < o["warmup_steps"]:
        return o["lr"] * (step + 1) / o["warmup_steps"]
    decay_steps = total - o["warmup_steps"]
    if decay_steps <= 1:
        return o["lr"]
    progress = min((step - o["warmup_steps"]) / (decay_steps - 1), 1.0)
    return o["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o["lr"] - o["min_lr"])


def main(d):
    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(d, "config.json")))
    layout = json.load(open(os.path.join(d, "params.json")))
    flat = np.fromfile(os.path.join(d, "params.bin"), dtype=np.float32)
    B, T, steps, V = cfg["B"], cfg["T"], cfg["steps"], cfg["vocab_size"]
    inputs = torch.from_numpy(np.fromfile(os.path.join(d, "inputs.bin"), dtype=np.int32)
                              .reshape(steps, B, T).astype(np.int64))
    targets = torch.from_numpy(np.fromfile(os.path.join(d, "targets.bin"), dtype=np.int32)
                               .reshape(steps, B, T).astype(np.int64))

    def load_params():
        return {e["name"]: torch.tensor(flat[e["offset"]:e["offset"] + int(np.prod(e["shape"]))]
                                        .reshape(e["shape"]), requires_grad=True)
                for e in layout}

    # Logits, loss and gradients at the initial weights, on batch 0.
    P = load_params()
    logits = model_forward(P, cfg, inputs[0])
    loss = mean_loss(logits, targets[0], V)
    loss.backward()
    logits.detach().numpy().astype(np.float32).tofile(os.path.join(d, "ref_logits.bin"))
    grads = np.zeros_like(flat)
    for e in layout:
        g = P[e["name"]].grad.numpy().reshape(-1)
        grads[e["offset"]:e["offset"] + g.size] = g
    grads.tofile(os.path.join(d, "ref_grads.bin"))

    # `steps` AdamW updates from the same initial weights.
    o = cfg["optim"]
    P = load_params()
    decay_names = set(cfg["decay"])
    groups = [
        {"params": [P[e["name"]] for e in layout if e["name"] in decay_names],
         "weight_decay": o["weight_decay"]},
        {"params": [P[e["name"]] for e in layout if e["name"] not in decay_names],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    losses = []
    for s in range(steps):
        lr = learning_rate(o, s, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        l = mean_loss(model_forward(P, cfg, inputs[s]), targets[s], V)
        l.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), o["grad_clip"])
        opt.step()
        losses.append(l.item())
    json.dump({"loss": loss.item(), "losses": losses}, open(os.path.join(d, "ref.json"), "w"))


if __name__ == "__main__":
    main(sys.argv[1])
