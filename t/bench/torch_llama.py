#!/usr/bin/env python3
"""The PyTorch side of herd's GPU benchmark (issue 8, acceptance 3): the same Llama 2 model
(RMSNorm pre-norm, rotary embeddings, grouped-query attention, SwiGLU, untied LM head, no
biases) at the same configs, trained the way herd trains on the GPU -- f32 master weights and
AdamW moments, bf16 compute (autocast), causal attention through
F.scaled_dot_product_attention (flash/cuDNN kernels on the GPU) -- and decoded with a bf16 KV
cache. It prints training tokens/s, model FLOP utilisation against the bf16 matmul peak it
measures itself, decode tokens/s at batch 1 and 64, and peak memory, then one JSON line for
herd's bench to take the ratio herd/PyTorch.

FLOPs per token are counted as t/bench/model_bench.c counts them (recomputation not counted):
    6 * (parameters other than the input embedding) + 6 * n_layers * seq * dim

PyTorch is a developer tool here, never a dependency of herd or of `make check`.

    python3 t/bench/torch_llama.py --config 124m            # on the GPU machine
    python3 t/bench/torch_llama.py --config 1b --compile     # torch.compile'd, PyTorch's best
    python3 t/bench/torch_llama.py --config tiny --device cpu --steps 2   # a smoke run anywhere
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Shapes. 124m: GPT-2-small-sized (dim 768, 12 layers, 12 heads) with Llama's vocabulary and
# SwiGLU width 8/3 * dim; 1b: TinyLlama-1.1B's shapes; 7b: Llama-2-7B's.
CONFIGS = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=176, vocab_size=512,
                 seq=64, batch=4),
    "124m": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048,
                 vocab_size=32000, seq=1024, batch=16),
    "1b": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632,
               vocab_size=32000, seq=1024, batch=8),
    "7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, hidden_dim=11008,
               vocab_size=32000, seq=1024, batch=1),
}
NORM_EPS = 1e-5
ROPE_THETA = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)
        return (normed * self.weight.float()).to(x.dtype)


def rotary_tables(seq, head_dim, device):
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq, device=device).float(), inv_freq)  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotary embedding, Hugging Face's half-split layout; x (B, heads, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_heads, self.n_kv_heads = c["n_heads"], c["n_kv_heads"]
        self.head_dim = c["dim"] // c["n_heads"]
        kv_dim = self.n_kv_heads * self.head_dim
        self.attn_norm = RMSNorm(c["dim"])
        self.wq = nn.Linear(c["dim"], c["dim"], bias=False)
        self.wk = nn.Linear(c["dim"], kv_dim, bias=False)
        self.wv = nn.Linear(c["dim"], kv_dim, bias=False)
        self.wo = nn.Linear(c["dim"], c["dim"], bias=False)
        self.mlp_norm = RMSNorm(c["dim"])
        self.w_gate = nn.Linear(c["dim"], c["hidden_dim"], bias=False)
        self.w_up = nn.Linear(c["dim"], c["hidden_dim"], bias=False)
        self.w_down = nn.Linear(c["hidden_dim"], c["dim"], bias=False)

    def attention(self, x, cos, sin, cache, start):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        causal = True
        if cache is not None:  # decoding: append to the cache, attend over everything so far
            cache[0][:, :, start:start + t] = k
            cache[1][:, :, start:start + t] = v
            k, v = cache[0][:, :, :start + t], cache[1][:, :, :start + t]
            causal = t > 1  # one new token sees every cached one
        if self.n_kv_heads != self.n_heads:
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x, cos, sin, cache=None, start=0):
        x = x + self.attention(self.attn_norm(x), cos, sin, cache, start)
        h = self.mlp_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"])
        self.lm_head = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        for name, p in self.named_parameters():  # herd's init: N(0, 0.02), norms at 1
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, targets=None, caches=None, start=0):
        t = tokens.shape[1]
        cos, sin = rotary_tables(start + t, self.c["dim"] // self.c["n_heads"], tokens.device)
        cos, sin = cos[start:], sin[start:]
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, caches[i] if caches else None, start)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device):
    """Best TFLOP/s over the shapes t/bench/cuda_matmul_bench.c times (bf16 on the GPU, f32 on
    the CPU), each repeated for ~0.5 s."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 2048, 768), (8192, 5632, 2048),
              (8192, 11008, 4096)] if device.type == "cuda" else [(1024, 1024, 1024)]
    best = 0.0
    for m, n, k in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(n, k, device=device, dtype=dtype)
        reps = 1
        while True:
            synchronize(device)
            begin = time.perf_counter()
            for _ in range(reps):
                a @ b.T
            synchronize(device)
            elapsed = time.perf_counter() - begin
            if elapsed > 0.5 or reps >= 1 << 16:
                break
            reps *= 2
        best = max(best, 2.0 * m * n * k * reps / elapsed / 1e12)
    return best


def flops_per_token(model, c):
    params = sum(p.numel() for p in model.parameters())
    return 6 * (params - c["vocab_size"] * c["dim"]) + 6 * c["n_layers"] * c["seq"] * c["dim"]


def train(model, c, device, steps, step_fn):
    g = torch.Generator(device="cpu").manual_seed(1)
    tokens = torch.randint(0, c["vocab_size"], (c["batch"], c["seq"]), generator=g).to(device)
    targets = torch.randint(0, c["vocab_size"], (c["batch"], c["seq"]), generator=g).to(device)
    losses = []
    for step in range(-2, steps):  # two warm-up steps (allocator, autotuning, compilation)
        if step == 0:
            synchronize(device)
            begin = time.perf_counter()
        losses.append(step_fn(tokens, targets))
    synchronize(device)
    elapsed = time.perf_counter() - begin
    return c["batch"] * c["seq"] * steps / elapsed, [float(x) for x in losses]


@torch.no_grad()
def decode(model, c, device, width, prompt_len=32, new_tokens=128):
    """Aggregate new tokens/s decoding `width` sequences greedily with a bf16 KV cache."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    head_dim = c["dim"] // c["n_heads"]
    total = prompt_len + new_tokens
    caches = [(torch.empty(width, c["n_kv_heads"], total, head_dim, device=device, dtype=dtype),
               torch.empty(width, c["n_kv_heads"], total, head_dim, device=device, dtype=dtype))
              for _ in range(c["n_layers"])]
    prompt = (torch.arange(prompt_len, device=device) * 97 + 3) % c["vocab_size"]
    tokens = prompt.expand(width, prompt_len).contiguous()
    synchronize(device)
    begin = time.perf_counter()
    logits = model(tokens, caches=caches, start=0)
    for i in range(new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        if i + 1 < new_tokens:
            logits = model(nxt, caches=caches, start=prompt_len + i)
    synchronize(device)
    return width * new_tokens / (time.perf_counter() - begin)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="124m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="rows per step (default: the config's)")
    parser.add_argument("--seq", type=int, help="tokens per row (default: the config's)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode benchmark")
    args = parser.parse_args()
    c = dict(CONFIGS[args.config])
    if args.batch:
        c["batch"] = args.batch
    if args.seq:
        c["seq"] = args.seq
    device = torch.device(args.device)
    torch.manual_seed(1)
    torch.backends.cuda.matmul.allow_tf32 = True

    model = Llama(c).to(device)  # f32 master weights
    n_params = sum(p.numel() for p in model.parameters())
    run = torch.compile(model) if args.compile else model
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, fused=fused)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step(tokens, targets):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=device.type == "cuda"):
            loss = run(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch_llama: {args.config}: dim {c['dim']}, {c['n_layers']} layers, {c['n_heads']} "
          f"heads, {c['n_kv_heads']} kv heads, hidden {c['hidden_dim']}, vocab "
          f"{c['vocab_size']}, seq {c['seq']}, batch {c['batch']}; {n_params / 1e6:.1f}M params; "
          f"torch {torch.__version__} on {name}{', compiled' if args.compile else ''}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rate, losses = train(model, c, device, args.steps, step)
    if not all(math.isfinite(x) for x in losses):
        sys.exit(f"torch_llama: non-finite loss {losses}")
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peak = matmul_peak(device)
    achieved = rate * flops_per_token(model, c) / 1e12
    print(f"training: {rate:.0f} tokens/s, {achieved:.1f} TFLOP/s = {100 * achieved / peak:.1f}% "
          f"of the measured {'bf16' if device.type == 'cuda' else 'f32'} matmul peak "
          f"{peak:.1f} TFLOP/s; loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"(uniform {math.log(c['vocab_size']):.3f})")
    if peak_memory:
        print(f"memory: peak {peak_memory / 2**30:.2f} GiB allocated")
    result = {"impl": "pytorch", "torch": torch.__version__, "device": name,
              "config": args.config, "compiled": args.compile, "batch": c["batch"],
              "seq": c["seq"], "params": n_params, "train_tokens_per_s": rate,
              "mfu": achieved / peak, "peak_tflops": peak, "peak_memory_bytes": peak_memory}
    if not args.no_decode:
        inference = Llama(c).to(device)
        inference.load_state_dict(model.state_dict())
        if device.type == "cuda":
            inference = inference.to(torch.bfloat16)
        result["decode_tokens_per_s"] = {}
        for width in (1, 64):
            decode(inference, c, device, width, new_tokens=4)  # warm-up
            rate_w = decode(inference, c, device, width)
            result["decode_tokens_per_s"][str(width)] = rate_w
            print(f"decode: {rate_w:.0f} tokens/s at batch {width}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
