#!/usr/bin/env python3
"""PyTorch's fused attention backends at herd's attention shapes (t/bench/cuda_attention_bench.c).

Issue 8 asks for attention through cuDNN's fused scaled-dot-product attention or a kernel of
herd's own, whichever is faster, measured. This times F.scaled_dot_product_attention, causal,
forward and forward+backward, under each backend PyTorch offers on this GPU (cuDNN, flash,
memory-efficient; bf16, as those kernels require), with GQA as Llama does it (keys and values
repeated to H heads), and prints milliseconds and TFLOP/s counted as herd's bench counts them.
A developer tool for the GPU machine, never a dependency of herd:

    python3 t/bench/torch_attention.py [--json]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"124m": (16, 1024, 12, 12, 64), "1b": (8, 1024, 32, 4, 64), "7b": (1, 4096, 32, 32, 128)}
# (cuDNN's appeared in torch 2.4: absent names are skipped)
BACKENDS = {name: getattr(SDPBackend, attr) for name, attr in
            (("cudnn", "CUDNN_ATTENTION"), ("flash", "FLASH_ATTENTION"),
             ("efficient", "EFFICIENT_ATTENTION"), ("math", "MATH")) if hasattr(SDPBackend, attr)}


def time_call(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.5:
        fn()
        reps += 1
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated (default all)")
    args = parser.parse_args()
    device = torch.device("cuda")
    print(f"torch_attention: torch {torch.__version__} on {torch.cuda.get_device_name(device)}, "
          f"cuDNN {torch.backends.cudnn.version()}; causal, bf16")
    result = {"impl": "pytorch", "torch": torch.__version__, "shapes": {}}
    for name in args.shapes.split(","):
        b, t, h, kvh, d = SHAPES[name]
        q = torch.randn(b, h, t, d, device=device, dtype=torch.bfloat16, requires_grad=True)
        kv = [torch.randn(b, kvh, t, d, device=device, dtype=torch.bfloat16, requires_grad=True)
              for _ in range(2)]
        flops = 2.0 * b * h * t * t * d
        result["shapes"][name] = {}
        for backend_name, backend in BACKENDS.items():
            def forward():
                k, v = (x.repeat_interleave(h // kvh, dim=1) for x in kv)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def both():
                forward().sum().backward()

            try:
                with sdpa_kernel(backend):
                    fwd, fwd_bwd = time_call(forward), time_call(both)
            except RuntimeError as error:  # this backend does not take these shapes here
                print(f"{name:5} {backend_name:9}: not available ({str(error).splitlines()[0]})")
                continue
            result["shapes"][name][backend_name] = {"forward_ms": fwd * 1e3,
                                                    "forward_backward_ms": fwd_bwd * 1e3}
            print(f"{name:5} {backend_name:9}: forward {fwd * 1e3:.3f} ms "
                  f"({flops / fwd / 1e12:.1f} TFLOP/s), forward+backward {fwd_bwd * 1e3:.3f} ms "
                  f"({3.5 * flops / fwd_bwd / 1e12:.1f} TFLOP/s)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
