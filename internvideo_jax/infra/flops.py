"""Model FLOPs by formula (matmuls and attention, the convention of MFU), per model family.

A multiply-add is 2 FLOPs. Elementwise work (norms, softmax, GELU, residuals) is left out, as in
the PaLM/MaxText MFU convention; XLA's cost analysis counts it too, so it reads a few percent
higher (tests/test_flops.py states the measured gap). A training step costs 3x the forward
(forward + backward through activations and weights).
"""
from __future__ import annotations

import numpy as np

from internvideo_jax.infra import hardware
from internvideo_jax.models.videomae import token_grid


def transformer_flops(tokens: int, dim: int, depth: int, mlp_dim: int,
                      context: int | None = None) -> float:
    """Forward FLOPs of `depth` pre-norm ViT blocks on (tokens, dim) per example: qkv, output
    projection, MLP, and attention's two (tokens x context) products (context = tokens)."""
    context = tokens if context is None else context
    dense = 2 * tokens * (4 * dim * dim + 2 * dim * mlp_dim)  # qkv + proj + fc1 + fc2
    attention = 2 * 2 * tokens * context * dim  # q @ k^T and p @ v
    return float(depth * (dense + attention))


def videomae_pretrain_flops(size, video_shape: tuple[int, int, int, int],
                            num_masked: int, num_decoded: int | None = None) -> float:
    """Forward FLOPs per clip of VideoMAEPretrain: patch embed and encoder on the K = N - M
    visible tokens, encoder_to_decoder, decoder on K + D tokens, head on the D decoded ones.
    D = M (every masked token decoded, num_decoded None: VideoMAE V1, the decoder on N) or, under
    VideoMAE V2's dual masking, the running cell mask's count (VideoMAEPretrain.num_decoded)."""
    t, h, w = token_grid((1,) + tuple(video_shape), size)
    n, c = t * h * w, video_shape[-1]
    k = n - num_masked
    d = num_masked if num_decoded is None else num_decoded
    patch = size.tubelet * size.patch * size.patch * c
    total = 2 * k * patch * size.dim  # patch embed
    total += transformer_flops(k, size.dim, size.depth, size.mlp_dim)
    total += 2 * k * size.dim * size.decoder_dim  # encoder_to_decoder
    total += transformer_flops(k + d, size.decoder_dim, size.decoder_depth, size.decoder_mlp_dim)
    total += 2 * d * size.decoder_dim * patch  # head
    return float(total)


def videomae_classifier_flops(size, video_shape: tuple[int, int, int, int],
                              num_classes: int) -> float:
    """Forward FLOPs per clip of VideoMAEClassifier (all N tokens, head on the pooled token)."""
    t, h, w = token_grid((1,) + tuple(video_shape), size)
    n, c = t * h * w, video_shape[-1]
    patch = size.tubelet * size.patch * size.patch * c
    return float(2 * n * patch * size.dim + transformer_flops(n, size.dim, size.depth,
                                                               size.mlp_dim)
                 + 2 * size.dim * num_classes)


def uniformerv2_encoder_flops(size, frames: int, temporal_kernel: int = 1,
                              temporal_stride: int = 1, local: bool = False) -> float:
    """Forward FLOPs per clip of UniFormerV2Encoder: conv1, the per-frame CLIP layers on 1 + hw
    tokens, the local UniBlocks' 1x1x1 and temporal convs if any, and per global UniBlock the dpe
    (depthwise 3x3x3) and the query decoder (1 query attending to T'(1 + hw) tokens)."""
    w, g = size.width, size.grid
    t2, hw = frames // temporal_stride, g * g
    total = 2 * t2 * hw * temporal_kernel * size.patch ** 2 * 3 * w  # conv1
    total += t2 * transformer_flops(1 + hw, w, size.layers, 4 * w)
    if local:  # lmhra1 and lmhra2 per layer: W -> W/1.5 -> depthwise (3,1,1) -> W, on patches
        r = int(w // 1.5)
        total += size.layers * 2 * t2 * hw * 2 * (2 * w * r + 3 * r)
    m = t2 * (1 + hw)
    query_decoder = (2 * w * w + 2 * m * 2 * w * w + 2 * 2 * m * w + 2 * w * w  # q, kv, attn, out
                     + 2 * 2 * w * 4 * w)  # MLP on the query
    total += len(size.return_list) * (2 * 27 * w * t2 * hw + query_decoder)
    return float(total)


def uniformerv2_classifier_flops(size, frames: int, num_classes: int, **encoder) -> float:
    return uniformerv2_encoder_flops(size, frames, **encoder) + 2.0 * size.width * num_classes


def text_encoder_flops(size) -> float:
    """CLIP text encoder per text: full (77-token) attention as XLA runs it, projection at eot."""
    return float(transformer_flops(size.context_length, size.width, size.layers, 4 * size.width)
                 + 2 * size.width * size.embed_dim)


def caption_decoder_flops(size, width: int, vision_width: int, visual_tokens: int,
                          text_tokens: int) -> float:
    """CaptionDecoder per example: the attention pooler (Q queries over M video tokens), then per
    layer a causal multi-query block and a cross block on L text tokens, and the predictor."""
    d, q, m, n = width, size.num_queries, visual_tokens, text_tokens
    hd, ff = width // size.heads, size.ff_mult * width
    pooler = 2 * q * d * d + 2 * m * vision_width * 2 * hd + 2 * 2 * q * m * d + 2 * q * d * d
    swiglu = 2 * n * d * 2 * ff + 2 * n * ff * d
    causal = 2 * n * d * d + 2 * n * d * 2 * hd + 2 * 2 * n * n * d + 2 * n * d * d + swiglu
    cross = 2 * n * d * d + 2 * q * d * 2 * hd + 2 * 2 * n * q * d + 2 * n * d * d + swiglu
    predictor = 2 * n * d * d + 2 * n * d * size.vocab_size
    return float(pooler + size.layers * (causal + cross) + predictor)


def multimodal_flops(size, frames: int, caption_length: int | None,
                     hard_negatives: int = 0, temporal_kernel: int = 1) -> float:
    """VideoTextModel per (video, text) pair: video tower, text encoder (on the caption and its
    hard_negatives negative captions) and, when caption_length is given, the caption decoder on
    caption_length - 1 tokens; temporal_kernel: the video tower's conv1 (stride 1)."""
    v = size.video
    total = uniformerv2_encoder_flops(v, frames, temporal_kernel) + 2 * v.width * v.embed_dim
    total += (1 + hard_negatives) * text_encoder_flops(size.text)
    if caption_length:
        total += caption_decoder_flops(size.decoder, size.text.width, v.width,
                                       frames * (1 + v.grid ** 2), caption_length - 1)
    return float(total)


def gated_cross_attention_flops(queries: int, keys: int, width: int, context_width: int,
                                mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one CMA block (models/cma.py) per example: context_proj on the keys,
    q/kv/out projections, attention's two products, the MLP on the queries."""
    q, k, d = queries, keys, width
    return float(2 * k * context_width * d + 2 * q * d * d + 2 * k * d * 2 * d
                 + 2 * 2 * q * k * d + 2 * q * d * d + 2 * 2 * q * d * int(d * mlp_ratio))


def cma_flops(videomae_size, uniformer_size, video_shape: tuple[int, int, int, int],
              num_classes: int, directions: tuple[str, ...], depth: int,
              temporal_kernel: int = 1, temporal_stride: int = 1,
              local: bool = False) -> tuple[float, float]:
    """(forward, training) FLOPs per clip of CrossModelAttention (models/cma.py).

    Training is not 3x the forward: both encoders are frozen. Their forward runs once and only
    the UniFormerV2 query token's path through the global UniBlocks is differentiated (activation
    gradients: query projections, the query's attention over the T'(1+hw) tokens, the MLP; the
    keys and values do not depend on it). The CMA blocks and heads train in full (3x), except
    that context_proj needs no gradient for its frozen input (2x)."""
    t, h, w, _ = video_shape
    vs, us = videomae_size, uniformer_size
    n = int(np.prod(token_grid((1,) + tuple(video_shape), vs)))
    videomae_encoder = videomae_classifier_flops(vs, video_shape, num_classes=0)  # no head
    uniformer_encoder = uniformerv2_encoder_flops(us, t, temporal_kernel, temporal_stride, local)
    width, m = us.width, (t // temporal_stride) * (1 + us.grid ** 2)
    # per global UniBlock, activation gradients only: q and out projections, dP = dO V^T and
    # dq = dS K over the m tokens, the MLP's two matmuls.
    query_backward = len(us.return_list) * (2 * 2 * width * width + 2 * 2 * m * width
                                            + 2 * 2 * width * 4 * width)
    blocks = {"uniformer_from_videomae": (1, n, width, vs.dim),
              "videomae_from_uniformer": (n, 1 + m, vs.dim, width)}
    block_forward = block_training = 0.0
    for direction in directions:
        q, k, d, dk = blocks[direction]
        f = gated_cross_attention_flops(q, k, d, dk)
        block_forward += depth * f
        block_training += depth * (3 * f - 2 * k * dk * d)
    heads = 2 * (vs.dim + width) * num_classes
    forward = videomae_encoder + uniformer_encoder + block_forward + heads
    training = (videomae_encoder + uniformer_encoder + query_backward + block_training
                + 3 * heads)
    return float(forward), float(training)


def training_flops_per_example(task) -> float | None:
    """A task's training FLOPs per example: its own count where freezing makes 3x the forward
    wrong (`train_flops_per_example`), else 3x `flops_per_example`; None when it has neither."""
    training = task.train_flops_per_example()
    if training is not None:
        return float(training)
    forward = task.flops_per_example()
    return None if forward is None else 3.0 * forward


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of a jax device, None when unknown (CPUs: measure it instead,
    `measured_matmul_peak`)."""
    chip = hardware.by_kind(getattr(device, "device_kind", ""))
    return chip.peak_tflops * 1e12 if chip else None


def measured_matmul_peak(n: int = 2048, dtype=np.float32, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` jitted (n x n) @ (n x n) matmuls on the default device:
    the practical peak of a machine without a published one (random operands: a GPU multiplies
    constant ones measurably faster than real data)."""
    import time

    import jax
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best
