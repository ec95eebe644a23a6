r"""Where a VideoMAE pretraining step's time goes, ours against PyTorch, one layer part at a time.

benchmarks/train_step.py compares whole steps; this times the parts of one transformer layer,
forward + backward (gradients of the output's sum with respect to the input and every weight), at
the two shapes of a ViT-B pretraining step with batch 2: the encoder's (2, 157, 768), 12 heads, and
the decoder's (2, 1568, 384), 6 heads.

  part          ours (jax.jit)                            PyTorch
  attn_core     models/attention.attention ('auto')       F.scaled_dot_product_attention
  attention     layers.MultiHeadSelfAttention             HF VideoMAEAttention (sdpa)
  mlp           layer_norm + layers.Mlp                   LayerNorm + Linear, GELU, Linear
  block         layers.Block                              HF VideoMAELayer (sdpa)

Times are the best of --repeats calls after a warm-up, in ms, each side in a fresh process
(--rounds rounds, order alternated, best kept: a shared host drifts by tens of percent).

  pip install torch==2.13.0 transformers==5.24.0
  python benchmarks/layer_parity.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import run_fresh, time_steps  # noqa: E402  (the same timing and process rules)

SHAPES = {"encoder": (2, 157, 768, 12), "decoder": (2, 1568, 384, 6)}  # (B, N, D, heads), ViT-B
PARTS = ("attn_core", "attention", "mlp", "block")


def ours(part: str, b: int, n: int, d: int, heads: int, repeats: int) -> float:
    import flax.linen as nn
    import jax
    from internvideo_jax.models import attention, layers
    x = np.random.default_rng(0).standard_normal((b, n, d), np.float32)
    if part == "attn_core":
        qkv = x.reshape(b, n, heads, d // heads)
        grad = jax.jit(jax.grad(lambda q, k, v: attention.attention(q, k, v).sum(), (0, 1, 2)))
        return time_steps(lambda: jax.block_until_ready(grad(qkv, qkv, qkv)), 2, repeats)

    class Part(nn.Module):
        @nn.compact
        def __call__(self, x):
            if part == "attention":
                return layers.MultiHeadSelfAttention(heads)(x)
            if part == "mlp":
                return layers.Mlp(4 * d)(layers.layer_norm(1e-6, "norm")(x))
            return layers.Block(heads, 4 * d)(x)

    model = Part()
    params = model.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda p, x: model.apply(p, x).sum(), (0, 1)))
    return time_steps(lambda: jax.block_until_ready(grad(params, x)), 2, repeats)


def torch_ref(part: str, b: int, n: int, d: int, heads: int, repeats: int) -> float:
    import torch
    import torch.nn.functional as F
    from transformers import VideoMAEConfig
    from transformers.models.videomae import modeling_videomae as hf
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((b, n, d), np.float32))
    x.requires_grad_()
    if part == "attn_core":
        qkv = x.detach().reshape(b, n, heads, d // heads).transpose(1, 2).contiguous()
        q, k, v = (qkv.clone().requires_grad_() for _ in range(3))
        return time_steps(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward(), 2,
                          repeats)
    config = VideoMAEConfig(hidden_size=d, num_attention_heads=heads, intermediate_size=4 * d,
                            qkv_bias=True, layer_norm_eps=1e-6, attn_implementation="sdpa")
    if part == "attention":
        module = hf.VideoMAEAttention(config)
    elif part == "mlp":
        module = torch.nn.Sequential(torch.nn.LayerNorm(d, eps=1e-6), torch.nn.Linear(d, 4 * d),
                                     torch.nn.GELU(), torch.nn.Linear(4 * d, d))
    else:
        module = hf.VideoMAELayer(config)
    module.train()

    def step():
        out = module(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()

    return time_steps(step, 2, repeats)


IMPLEMENTATIONS = {"pytorch": torch_ref, "ours": ours}


def measure(impl: str, part: str, shape: str, repeats: int) -> float:
    """Best seconds of `impl`'s part measured in a fresh Python process."""
    return run_fresh(__file__, ["--child", impl, "--part", part, "--shape", shape, "--repeats",
                                str(repeats)], f"{impl} {part} {shape}")["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=list(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        seconds = IMPLEMENTATIONS[a.child](a.part, *SHAPES[a.shape], a.repeats)
        print(json.dumps({"seconds": seconds}))
        return
    rows = []
    for shape in a.shapes.split(","):
        for part in a.parts.split(","):
            best = {impl: float("inf") for impl in IMPLEMENTATIONS}
            for r in range(a.rounds):
                for impl in (list(IMPLEMENTATIONS) if r % 2 == 0 else list(IMPLEMENTATIONS)[::-1]):
                    best[impl] = min(best[impl], measure(impl, part, shape, a.repeats))
            print(json.dumps({"shape": shape, "part": part,
                              **{k: round(v * 1e3, 1) for k, v in best.items()}}), flush=True)
            rows.append((shape, part, best))
    print(f"\n{os.cpu_count()} cores; fwd+bwd ms, best of {a.rounds} fresh-process rounds")
    print("| shape (B, N, D), heads | part | PyTorch ms | ours ms | ours / PyTorch time |")
    print("|---|---|---|---|---|")
    for shape, part, best in rows:
        b, n, d, h = SHAPES[shape]
        print(f"| {shape} ({b}, {n}, {d}), {h} | {part} | {best['pytorch'] * 1e3:.1f} | "
              f"{best['ours'] * 1e3:.1f} | {best['ours'] / best['pytorch']:.2f} |")


if __name__ == "__main__":
    main()
