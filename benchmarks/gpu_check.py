r"""GPU checks for a session with an NVIDIA GPU: is cuDNN's fused attention taken and correct, how
fast is it against XLA's attention and PyTorch's flash SDPA, and does bf16 training track float32.

1. attention, bf16, batch 32, through models/attention.py's 'auto' (what every model calls): at
   the attention shapes of VideoMAE pretraining at 16x224 it must compile to cuDNN's fused kernel
   (a `__cudnn$fmha` custom call in the optimised HLO); at the multimodal model's causal text
   attention and the caption pooler's one-kv-head cross-attention it may fall back to XLA (the
   table says which it took). Everywhere its forward output and q/k/v gradients are compared by
   ||x - ref|| / ||ref|| with a float32 reference (XLA's path at 'highest' matmul precision, inputs
   upcast), next to XLA's own bf16 error; then forward + backward time of 'auto', XLA and torch
   SDPA (PyTorch's flash kernel).
2. training: our ViT-S pretraining step at 16x224, batch 4, run 4 steps in float32 and in bf16
   (same weights, data and mask): the bf16 losses must stay within 2% of the float32 ones.

Prints a markdown table per part and one JSON line per measurement; exits non-zero when a check
fails. --dry-run runs everything on any machine at small shapes (where 'auto' takes no cuDNN, so
it tests this script, not the GPU).

  python benchmarks/gpu_check.py
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import build_step, make_batch, time_steps  # noqa: E402

# name -> (B, Nq, Nk, heads, kv heads, head_dim, causal, cuDNN required), batch 32. VideoMAE
# pretraining at 16x224 must take cuDNN; for the multimodal model's causal text attention and the
# caption pooler's multi-query cross-attention 'auto' may fall back to XLA (logged): reported only.
SHAPES = {
    "ViT-B decoder, 1568 tokens": (32, 1568, 1568, 6, 6, 64, False, True),
    "ViT-L decoder, 1568 tokens": (32, 1568, 1568, 8, 8, 64, False, True),
    "ViT-B encoder, 157 visible": (32, 157, 157, 12, 12, 64, False, True),
    "ViT-H encoder, 157 visible": (32, 157, 157, 16, 16, 80, False, True),
    "CLIP L/14 text, causal, 77 tokens": (32, 77, 77, 12, 12, 64, True, False),
    "caption pooler, 1 kv head, 256 queries over 8x257": (32, 256, 2056, 12, 1, 64, False, False),
}
DRY_SHAPES = {"small": (2, 96, 96, 2, 2, 16, False, False),
              "small causal, 1 kv head": (2, 24, 24, 2, 1, 16, True, False)}
ATTENTION_TOLERANCE = 2e-2  # relative L2 of bf16 attention (inputs rounded to 2^-9 relative)
TRAINING_TOLERANCE = 0.02  # relative loss difference, bf16 against float32, over 4 steps


def _relative(x, ref) -> float:
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def check_attention(shapes: dict, repeats: int) -> list[str]:
    """Correctness and speed of 'auto' attention (what the models call) per shape; failures."""
    import jax
    import jax.numpy as jnp
    from internvideo_jax.models.attention import attention

    failures = []
    print("| shape (B, Nq, Nk, h, h_kv, hd) | auto took cuDNN fmha | auto rel. error out/dq/dk/dv "
          "| xla bf16 rel. error out/dq/dk/dv | auto ms | xla ms | torch SDPA ms | auto TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (b, nq, nk, h, h_kv, hd, causal, required) in shapes.items():
        keys = jax.random.split(jax.random.key(nq * h + hd), 4)
        q = jax.random.normal(keys[0], (b, nq, h, hd), jnp.bfloat16)
        k, v = (jax.random.normal(key, (b, nk, h_kv, hd), jnp.bfloat16) for key in keys[1:3])
        d_out = jax.random.normal(keys[3], (b, nq, h, hd), jnp.bfloat16)

        def grads(implementation, precision=None):
            def loss(q, k, v):
                out = attention(q, k, v, is_causal=causal, implementation=implementation)
                return jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32)), out

            def run(q, k, v):
                with (jax.default_matmul_precision(precision) if precision
                      else contextlib.nullcontext()):
                    (_, out), g = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
                return (out,) + g
            return jax.jit(run)

        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        reference = grads("xla", "highest")(*f32)
        auto_fn, xla_fn = grads("auto"), grads("xla")
        has_fmha = "__cudnn$fmha" in auto_fn.lower(q, k, v).compile().as_text()
        auto_err = [_relative(x, r) for x, r in zip(auto_fn(q, k, v), reference)]
        xla_err = [_relative(x, r) for x, r in zip(xla_fn(q, k, v), reference)]
        auto_ms = 1e3 * time_steps(lambda: jax.block_until_ready(auto_fn(q, k, v)), 2, repeats)
        xla_ms = 1e3 * time_steps(lambda: jax.block_until_ready(xla_fn(q, k, v)), 2, repeats)
        torch_ms = _torch_sdpa_ms(q, k, v, d_out, causal, repeats)
        flop = 3 * 4 * b * h * nq * nk * hd / (2 if causal else 1)  # fwd's 2 products, bwd 2x
        row = {"shape": name, "b_nq_nk_h_hkv_hd": [b, nq, nk, h, h_kv, hd], "causal": causal,
               "cudnn_in_hlo": has_fmha, "auto_error": auto_err, "xla_error": xla_err,
               "auto_ms": auto_ms, "xla_ms": xla_ms, "torch_sdpa_ms": torch_ms}
        print(json.dumps(row), file=sys.stderr)
        print(f"| {name} {(b, nq, nk, h, h_kv, hd)} | {has_fmha} | "
              f"{'/'.join(f'{e:.1e}' for e in auto_err)} | "
              f"{'/'.join(f'{e:.1e}' for e in xla_err)} | {auto_ms:.2f} | {xla_ms:.2f} | "
              f"{torch_ms:.2f} | {flop / auto_ms / 1e9:.0f} |", flush=True)
        if required and not has_fmha:
            failures.append(f"{name}: 'auto' did not compile to cuDNN's fused attention")
        for part, ae, xe in zip(("out", "dq", "dk", "dv"), auto_err, xla_err):
            if not ae < ATTENTION_TOLERANCE or not ae <= 2 * xe + 1e-3:
                failures.append(f"{name}: auto {part} relative error {ae:.2e} (xla bf16 "
                                f"{xe:.2e}; bound {ATTENTION_TOLERANCE} and 2x xla + 1e-3)")
    return failures


def _torch_sdpa_ms(q, k, v, d_out, causal: bool, repeats: int) -> float:
    """PyTorch's SDPA forward + backward on the same bf16 inputs (benchmarks/attention.py's
    torch_step), in ms; nan without torch."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return float("nan")
    from attention import torch_step  # benchmarks/attention.py (this folder is on sys.path)
    return 1e3 * time_steps(torch_step(q, k, v, d_out, causal), 2, repeats)


def check_training(size: str, batch: int, frames: int, image: int, steps: int) -> list[str]:
    """Losses of `steps` steps in float32 and bf16 from the same start; failures."""
    import jax
    from internvideo_jax.models.videomae import get_size
    video, mask = make_batch(get_size(size), batch, frames=frames, image=image)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        step, state, batch_on_device = build_step(size, video, mask, dtype)
        losses[dtype] = []
        for _ in range(steps):
            state, metrics = step(state, batch_on_device)
            losses[dtype].append(float(jax.device_get(metrics["loss"])))
    gaps = [abs(b - f) / abs(f) for f, b in zip(losses["float32"], losses["bfloat16"])]
    print(json.dumps({"training": size, "losses": losses, "relative_gaps": gaps}), file=sys.stderr)
    print(f"\n| ViT-{size} {frames}x{image} batch {batch}, step | float32 loss | bf16 loss | "
          "relative gap |\n|---|---|---|---|")
    for i, (f, b, g) in enumerate(zip(losses["float32"], losses["bfloat16"], gaps)):
        print(f"| {i} | {f:.5f} | {b:.5f} | {g:.1e} |")
    return [f"training step {i}: bf16 loss {b:.5f} vs float32 {f:.5f} ({g:.1e} > "
            f"{TRAINING_TOLERANCE})"
            for i, (f, b, g) in enumerate(zip(losses["float32"], losses["bfloat16"], gaps))
            if not g <= TRAINING_TOLERANCE]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="small shapes on any machine (tests the script, not the GPU)")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    import jax
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    if not a.dry_run and jax.default_backend() != "gpu":
        raise SystemExit("gpu_check: no GPU here (jax backend "
                         f"{jax.default_backend()!r}); --dry-run tests the script anywhere")
    failures = check_attention(DRY_SHAPES if a.dry_run else SHAPES, 2 if a.dry_run else a.repeats)
    if a.dry_run:
        failures += check_training("tiny", 2, 4, 32, 2)
    else:
        failures += check_training("S", 4, 16, 224, 4)
    if failures:
        raise SystemExit("gpu_check FAILED:\n  " + "\n  ".join(failures))
    print("\ngpu_check: all checks passed")


if __name__ == "__main__":
    main()
