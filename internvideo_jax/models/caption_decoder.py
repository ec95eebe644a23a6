"""The caption decoder of multimodal pretraining (CoCa-style), laid out as InternVideo's release.

Inputs: the video backbone's last-layer tokens (B, M, Cv) (all T'(1+hw) of them, before
visual_ln_post) and the text encoder's final tokens (B, L, D) (after ln_final; the text encoder is
causal, so position i has seen ids[:, :i+1] only).
  visual_queries (Q, D) -> visual_attn_pooler: multi-query cross-attention to the video tokens
      (LayerNorm without bias on the queries and on the tokens), no residual
      -> visual_pooler_norm (LayerNorm) -> pooled (B, Q, D)
  text tokens -> text_norm (LayerNorm) -> `layers` x [causal_i, cross_i]
    causal_i: x + attn(n) + ff(n), n = LN(x) without bias: parallel causal multi-query self-attention
      (`heads` query heads, one shared key/value head, rotary positions on q and k) and SwiGLU FF;
    cross_i: x + cross-attn(n, pooled) + ff(n): multi-query cross-attention to the pooled tokens
      (no norm on them; they are normalised above) and a parallel SwiGLU FF;
  -> predictor: LN -> Linear -> GELU (exact) -> LN -> Linear(vocab) -> logits (B, L, vocab).
CaptionDecoder(predictor=False) stops before the predictor and builds none: it returns the hidden
states after the last cross block (B, L, D), what the reference's video QA head reads (CoTrain
clip_module.py sets `caption_decoder.predictor = nn.Identity()` for clip_qa_type 'vtc_cap').
The loss (losses.caption_loss) predicts ids[:, 1:] from the tokens at ids[:, :-1], padding ignored.
The official key for each parameter is in convert/caption_decoder.py; the reference's fused
q/k/v/ff projection is split here into q, kv and ff_in so that heads and FF hidden can be sharded.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models.attention import attention
from internvideo_jax.models.layers import Projection, constrain, gelu, remat_block

Dtype = Any


@dataclasses.dataclass(frozen=True)
class CaptionDecoderSize:
    """Width is the text encoder's (the decoder reads its tokens); the reference uses
    heads = width // 64 and 4 layers."""

    layers: int
    heads: int
    num_queries: int = 256
    ff_mult: int = 4
    vocab_size: int = 49408


DECODER_SIZES: dict[str, CaptionDecoderSize] = {
    "tiny": CaptionDecoderSize(layers=2, heads=4, num_queries=16),
    "B/16": CaptionDecoderSize(layers=4, heads=8),
    "L/14": CaptionDecoderSize(layers=4, heads=12),
}

_normal_002 = nn.initializers.normal(0.02)  # the reference's init_weights for every Linear


def _norm(name: str, use_bias: bool) -> nn.LayerNorm:
    """LayerNorm, eps 1e-5, in float32. The reference's CoCa LayerNorm has a weight and a bias
    buffer that is always zero: use_bias=False."""
    return nn.LayerNorm(epsilon=1e-5, use_bias=use_bias, dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("embed",)))


def _proj(out_shape, in_names, out_names, name, dtype, use_bias=False) -> Projection:
    return Projection(out_shape, in_names, out_names, use_bias=use_bias, dtype=dtype,
                      kernel_init=_normal_002, name=name)


def rotary(x: jax.Array, positions: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotary position embedding on (B, L, heads, hd): pairs (i, i + hd/2) rotated by pos * f_i."""
    hd = x.shape[-1]
    freqs = 1.0 / theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)  # (hd/2,)
    angles = positions[:, None].astype(jnp.float32) * freqs[None]  # (L, hd/2)
    cos = jnp.concatenate([jnp.cos(angles)] * 2, -1)[None, :, None]  # (1, L, 1, hd)
    sin = jnp.concatenate([jnp.sin(angles)] * 2, -1)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x * cos + rotated * sin).astype(x.dtype)


def swiglu(h: jax.Array) -> jax.Array:
    """(..., 2, ff) [value, gate] -> silu(gate) * value (..., ff)."""
    return jax.nn.silu(h[..., 1, :]) * h[..., 0, :]


class MultiQueryAttention(nn.Module):
    """`heads` query heads and one key/value head on normalised inputs (no biases):
    x (B, L, D), context (B, S, Dc) or None (self-attention, causal with rotary) -> (B, L, D)."""

    heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        d = x.shape[-1]
        hd = d // self.heads
        q = _proj((self.heads, hd), ("embed",), ("heads", "kv"), "to_q", self.dtype)(x)
        source = x if context is None else context
        kv = _proj((2, 1, hd), ("embed",), (None, None, "kv"), "to_kv", self.dtype)(source)
        k, v = kv[:, :, 0], kv[:, :, 1]  # (B, S, 1, hd)
        if self.causal:
            positions = jnp.arange(x.shape[1])
            q, k = rotary(q, positions), rotary(k, positions)
        out = attention(q, k, v, is_causal=self.causal)  # (B, L, h, hd)
        return _proj((d,), ("heads", "kv"), ("embed",), "to_out", self.dtype)(out)


class FeedForward(nn.Module):
    """SwiGLU: (B, L, D) -> ff_in (2, ff) -> silu(gate) * value -> ff_out -> (B, L, D)."""

    mult: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = _proj((2, self.mult * d), ("embed",), (None, "mlp"), "ff_in", self.dtype)(x)
        h = constrain(swiglu(h), "act_batch", "act_length", "act_mlp")  # (B, L, ff)
        return _proj((d,), ("mlp",), ("embed",), "ff_out", self.dtype)(h)


class ParallelCausalBlock(nn.Module):
    """x + causal self-attention(LN x) + SwiGLU(LN x)."""

    heads: int
    ff_mult: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _norm("norm", use_bias=False)(x).astype(self.dtype)
        attn = MultiQueryAttention(self.heads, causal=True, dtype=self.dtype, name="attn")(h)
        ff = FeedForward(self.ff_mult, self.dtype, name="ff")(h)
        return constrain(x + attn + ff, "act_batch", "act_length", "act_embed")


class CrossBlock(nn.Module):
    """x + cross-attention(LN x, pooled) + SwiGLU(LN x)."""

    heads: int
    ff_mult: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pooled: jax.Array) -> jax.Array:
        h = _norm("norm", use_bias=False)(x).astype(self.dtype)
        attn = MultiQueryAttention(self.heads, dtype=self.dtype, name="attn")(h, pooled)
        ff = FeedForward(self.ff_mult, self.dtype, name="ff")(h)
        return constrain(x + attn + ff, "act_batch", "act_length", "act_embed")


class AttentionPooler(nn.Module):
    """Learned queries (Q, D) attend to the video tokens (B, M, Cv) -> (B, Q, D), normalised."""

    heads: int
    num_queries: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, width: int) -> jax.Array:
        queries = self.param("visual_queries", nn.with_logical_partitioning(
            nn.initializers.normal(width ** -0.5), (None, "embed")),
            (self.num_queries, width), jnp.float32)
        q = _norm("query_norm", use_bias=False)(queries).astype(self.dtype)  # (Q, D)
        c = _norm("context_norm", use_bias=False)(tokens).astype(self.dtype)  # (B, M, Cv)
        q = jnp.broadcast_to(q[None], (tokens.shape[0],) + q.shape)  # (B, Q, D)
        pooled = MultiQueryAttention(self.heads, dtype=self.dtype, name="attn")(q, c)
        return _norm("pooled_norm", use_bias=True)(pooled).astype(self.dtype)  # (B, Q, D)


class CaptionDecoder(nn.Module):
    """(video tokens (B, M, Cv), text tokens (B, L, D)) -> next-token logits (B, L, vocab), f32.

    remat: a layers.REMAT_POLICIES name for the causal and cross blocks (same outputs and
    parameters).
    predictor: False leaves the predictor out (no predictor_* parameters) and returns the hidden
    states after the last cross block (B, L, D), f32, unnormalised."""

    size: CaptionDecoderSize
    dtype: Dtype = jnp.float32
    remat: str = "none"
    predictor: bool = True

    @nn.compact
    def __call__(self, visual_tokens: jax.Array, text_tokens: jax.Array) -> jax.Array:
        s = self.size
        width = text_tokens.shape[-1]
        if width % s.heads:
            raise ValueError(f"caption decoder: {s.heads} heads do not divide the text width "
                             f"{width}.")
        pooled = AttentionPooler(s.heads, s.num_queries, self.dtype, name="pooler")(
            visual_tokens, width)  # (B, Q, D)
        x = _norm("text_norm", use_bias=True)(text_tokens).astype(self.dtype)  # (B, L, D)
        x = constrain(x, "act_batch", "act_length", "act_embed")
        causal_block = remat_block(self.remat, ParallelCausalBlock, static_argnums=())
        cross_block = remat_block(self.remat, CrossBlock, static_argnums=())
        for i in range(s.layers):
            x = causal_block(s.heads, s.ff_mult, self.dtype, name=f"causal_{i}")(x)
            x = cross_block(s.heads, s.ff_mult, self.dtype, name=f"cross_{i}")(x, pooled)
        if not self.predictor:
            return x.astype(jnp.float32)  # (B, L, D)
        x = _norm("predictor_norm_1", use_bias=True)(x).astype(self.dtype)
        x = _proj((width,), ("embed",), ("mlp",), "predictor_fc", self.dtype, use_bias=True)(x)
        x = gelu(x)
        x = _norm("predictor_norm_2", use_bias=True)(x).astype(self.dtype)
        logits = _proj((s.vocab_size,), ("embed",), ("vocab",), "predictor_out", self.dtype,
                       use_bias=True)(x)
        return logits.astype(jnp.float32)  # (B, L, vocab)


def param_count(size: CaptionDecoderSize, width: int, vision_width: int) -> int:
    """Parameters of a CaptionDecoder by formula (a check on the module, used in tests)."""
    d, hd, ff = width, width // size.heads, size.ff_mult * width
    attn = d * d + d * 2 * hd + d * d  # to_q, to_kv, to_out
    block_ff = d * 2 * ff + ff * d
    pooler = size.num_queries * d + d + vision_width + (d * d + vision_width * 2 * hd + d * d) \
        + 2 * d
    layers = size.layers * 2 * (d + attn + block_ff)
    predictor = 2 * d + (d * d + d) + 2 * d + (d * size.vocab_size + size.vocab_size)
    return pooler + 2 * d + layers + predictor
