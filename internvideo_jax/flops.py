"""Model FLOPs by formula (matmuls and attention, the convention of MFU), per model family.

A multiply-add is 2 FLOPs. Elementwise work (norms, softmax, GELU, residuals) is left out, as in
the PaLM/MaxText MFU convention; XLA's cost analysis counts it too, so it reads a few percent
higher (tests/test_flops.py states the measured gap). A training step costs 3x the forward
(forward + backward through activations and weights).
"""
from __future__ import annotations

import numpy as np

PEAK_TFLOPS = {  # dense bf16 peak per device, by jax device_kind
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100": 989.0, "NVIDIA H200": 989.0,
    "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0,
    # TPU kinds as jax names them (v5p reports itself as 'TPU v5', v5e as 'TPU v5 lite')
    "TPU v4": 275.0, "TPU v5": 459.0, "TPU v5 lite": 197.0, "TPU v6 lite": 918.0,
}


def transformer_flops(tokens: int, dim: int, depth: int, mlp_dim: int,
                      context: int | None = None) -> float:
    """Forward FLOPs of `depth` pre-norm ViT blocks on (tokens, dim) per example: qkv, output
    projection, MLP, and attention's two (tokens x context) products (context = tokens)."""
    context = tokens if context is None else context
    dense = 2 * tokens * (4 * dim * dim + 2 * dim * mlp_dim)  # qkv + proj + fc1 + fc2
    attention = 2 * 2 * tokens * context * dim  # q @ k^T and p @ v
    return float(depth * (dense + attention))


def videomae_pretrain_flops(size, video_shape: tuple[int, int, int, int],
                            num_masked: int) -> float:
    """Forward FLOPs per clip of VideoMAEPretrain: patch embed on all N tokens, encoder on the
    K = N - M visible, encoder_to_decoder, decoder on N, head on the M masked."""
    t, h, w, c = video_shape
    n = (t // size.tubelet) * (h // size.patch) * (w // size.patch)
    k = n - num_masked
    patch = size.tubelet * size.patch * size.patch * c
    total = 2 * n * patch * size.dim  # patch embed
    total += transformer_flops(k, size.dim, size.depth, size.mlp_dim)
    total += 2 * k * size.dim * size.decoder_dim  # encoder_to_decoder
    total += transformer_flops(n, size.decoder_dim, size.decoder_depth, size.decoder_mlp_dim)
    total += 2 * num_masked * size.decoder_dim * patch  # head
    return float(total)


def videomae_classifier_flops(size, video_shape: tuple[int, int, int, int],
                              num_classes: int) -> float:
    """Forward FLOPs per clip of VideoMAEClassifier (all N tokens, head on the pooled token)."""
    t, h, w, c = video_shape
    n = (t // size.tubelet) * (h // size.patch) * (w // size.patch)
    patch = size.tubelet * size.patch * size.patch * c
    return float(2 * n * patch * size.dim + transformer_flops(n, size.dim, size.depth,
                                                               size.mlp_dim)
                 + 2 * size.dim * num_classes)


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of a jax device, None when unknown (CPUs: measure it instead,
    `measured_matmul_peak`)."""
    kind = getattr(device, "device_kind", "")
    if kind in PEAK_TFLOPS:  # exact first: 'TPU v5' is a prefix of 'TPU v5 lite'
        return PEAK_TFLOPS[kind] * 1e12
    for name, tflops in PEAK_TFLOPS.items():  # GPU names carry suffixes (memory, form factor)
        if name.startswith("NVIDIA") and kind.startswith(name):
            return tflops * 1e12
    return None


def measured_matmul_peak(n: int = 2048, dtype=np.float32, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` jitted (n x n) @ (n x n) matmuls on the default device:
    the practical peak of a machine without a published one."""
    import time

    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best
