r"""Attention forward + backward on the CPU: our blocked kernel against jax.nn.dot_product_attention
(XLA) and PyTorch's scaled_dot_product_attention (a fused flash-style CPU kernel), same inputs.

Shapes (B, N, heads, head_dim), self-attention, float32: the decoders of VideoMAE pretraining at
16x224 (ViT-S: 3 heads, ViT-B: 6 heads, 1,568 tokens), the demo's tiny decoder (16x64 at patch 8:
512 tokens), and a ViT-S encoder on its 157 visible tokens (where 'auto' keeps XLA's).
GFLOP/s counts 4 * B * h * N^2 * hd for the forward's two products and twice that for the backward
(no credit for the blocked kernel's recomputation). Best of --repeats after one warm-up call.

  python benchmarks/attention.py            # torch optional: pip install torch==2.13.0
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_step import time_steps  # noqa: E402  (this folder is on sys.path)

SHAPES = {
    "VideoMAE-S decoder, 16x224": (2, 1568, 3, 64),
    "VideoMAE-B decoder, 16x224": (2, 1568, 6, 64),
    "demo tiny decoder, 16x64": (16, 512, 2, 32),
    "VideoMAE-S encoder, 157 visible": (2, 157, 6, 64),
}


def jax_step(implementation: str, q, k, v, d_out):
    import jax
    import jax.numpy as jnp
    from internvideo_jax.models.attention import attention

    def loss(q, k, v):
        return jnp.sum(attention(q, k, v, implementation=implementation) * d_out)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return lambda: jax.block_until_ready(grad(q, k, v))


def torch_step(q, k, v, d_out, causal: bool = False):
    """PyTorch's scaled_dot_product_attention forward + backward on (B, N, h, hd) inputs (k, v
    may have fewer heads), in the inputs' dtype (bf16 stays bf16), on the GPU when there is one;
    returns a step() that blocks until done."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if str(np.asarray(q).dtype) == "bfloat16" else torch.float32

    def as_torch(x):  # (B, N, h, hd) -> (B, h, N, hd)
        return torch.from_numpy(np.asarray(x, np.float32)).to(device, dtype).transpose(1, 2)

    tq, tk, tv = (as_torch(x).contiguous().requires_grad_() for x in (q, k, v))
    td = as_torch(d_out)

    def step():
        for t in (tq, tk, tv):
            t.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv, is_causal=causal, enable_gqa=tk.shape[1] != tq.shape[1])
        (out.float() * td.float()).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    import importlib.util
    have_torch = importlib.util.find_spec("torch") is not None
    print("| shape (B, N, h, hd) | xla ms | blocked ms | blocked speed-up | torch SDPA ms "
          "| xla GFLOP/s | blocked GFLOP/s | torch GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (b, n, h, hd) in SHAPES.items():
        rng = np.random.default_rng(0)
        q, k, v, d_out = (rng.standard_normal((b, n, h, hd)).astype(np.float32) for _ in range(4))
        flop = 3 * 4 * b * h * n * n * hd
        xla = time_steps(jax_step("xla", q, k, v, d_out), 1, a.repeats)
        blocked = time_steps(jax_step("blocked", q, k, v, d_out), 1, a.repeats)
        sdpa = time_steps(torch_step(q, k, v, d_out), 1, a.repeats) if have_torch else float("nan")
        print(f"| {name} {(b, n, h, hd)} | {1e3 * xla:.1f} | {1e3 * blocked:.1f} | "
              f"{xla / blocked:.2f}x | {1e3 * sdpa:.1f} | {flop / xla / 1e9:.0f} | "
              f"{flop / blocked / 1e9:.0f} | {flop / sdpa / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
