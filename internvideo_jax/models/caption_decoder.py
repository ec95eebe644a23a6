"""The caption decoder of multimodal pretraining (CoCa-style, as in the InternVideo release).

visual tokens (B, M, Cv) -> attention pooler: `num_queries` learned queries attend to them
(LayerNorm on the tokens and on the queries) -> pooled (B, Q, D).
text ids (B, L) -> own token embedding (B, L, D) -> `layers` x [parallel causal block, cross block]
  - parallel block: LN (no bias) then, in parallel, causal multi-query self-attention (heads query
    heads, one shared key/value head, rotary positions on q and k) and a SwiGLU feed-forward; both
    added to the residual;
  - cross block: LN (no bias) then multi-query cross-attention to the pooled tokens (LN on them)
    plus a parallel SwiGLU feed-forward, added to the residual;
-> predictor: LN -> Linear -> GELU -> LN -> Linear(vocab) -> logits (B, L, vocab).
The loss (losses.caption_loss) predicts ids[:, 1:] from ids[:, :-1], padding ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models.layers import Projection, constrain

Dtype = Any


@dataclasses.dataclass(frozen=True)
class CaptionDecoderSize:
    width: int
    layers: int
    heads: int
    num_queries: int
    ff_mult: int = 4
    vocab_size: int = 49408


DECODER_SIZES: dict[str, CaptionDecoderSize] = {
    "tiny": CaptionDecoderSize(width=64, layers=2, heads=4, num_queries=16),
    "B/16": CaptionDecoderSize(width=512, layers=4, heads=8, num_queries=256),
    "L/14": CaptionDecoderSize(width=768, layers=4, heads=12, num_queries=256),
}


def _norm(name: str, use_bias: bool = False) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_bias=use_bias, dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("embed",)))


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


class SwiGLU(nn.Module):
    """(B, L, D) -> Linear(2 * ff) -> silu(gate) * value -> Linear(D), no biases."""

    hidden_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = Projection((2, self.hidden_dim), ("embed",), (None, "mlp"), use_bias=False,
                       dtype=self.dtype, name="ff_in")(x)  # (B, L, 2, ff)
        h = constrain(jax.nn.silu(h[..., 1, :]) * h[..., 0, :], "act_batch", "act_length",
                      "act_mlp")
        return Projection((d,), ("mlp",), ("embed",), use_bias=False, dtype=self.dtype,
                          name="ff_out")(h)


class MultiQueryAttention(nn.Module):
    """heads query heads, one key/value head; causal (with rotary) or cross-attention."""

    heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        d = x.shape[-1]
        hd = d // self.heads
        q = Projection((self.heads, hd), ("embed",), ("heads", "kv"), use_bias=False,
                       dtype=self.dtype, name="q")(x)  # (B, L, h, hd)
        source = x if context is None else context
        kv = Projection((2, 1, hd), ("embed",), ("qkv", None, "kv"), use_bias=False,
                        dtype=self.dtype, name="kv")(source)  # (B, S, 2, 1, hd)
        k, v = kv[:, :, 0], kv[:, :, 1]  # (B, S, 1, hd)
        if self.causal:
            positions = jnp.arange(x.shape[1])
            q, k = rotary(q, positions), rotary(k, positions)
        out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)  # (B, L, h, hd)
        return Projection((d,), ("heads", "kv"), ("embed",), use_bias=False, dtype=self.dtype,
                          name="out")(out)


class ParallelCausalBlock(nn.Module):
    heads: int
    ff_mult: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _norm("norm")(x).astype(self.dtype)
        attn = MultiQueryAttention(self.heads, causal=True, dtype=self.dtype, name="attn")(h)
        ff = SwiGLU(self.ff_mult * x.shape[-1], self.dtype, name="ff")(h)
        return constrain(x + attn + ff, "act_batch", "act_length", "act_embed")


class CrossBlock(nn.Module):
    heads: int
    ff_mult: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        h = _norm("norm")(x).astype(self.dtype)
        c = _norm("context_norm")(context).astype(self.dtype)
        attn = MultiQueryAttention(self.heads, dtype=self.dtype, name="attn")(h, c)
        ff = SwiGLU(self.ff_mult * x.shape[-1], self.dtype, name="ff")(h)
        return constrain(x + attn + ff, "act_batch", "act_length", "act_embed")


class AttentionPooler(nn.Module):
    """num_queries learned queries attend to the visual tokens (B, M, Cv) -> (B, Q, D)."""

    width: int
    heads: int
    num_queries: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        queries = self.param("queries", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), (None, "embed")), (self.num_queries, self.width),
            jnp.float32)
        q = _norm("ln_q", use_bias=True)(queries).astype(self.dtype)  # (Q, D)
        kv = _norm("ln_k", use_bias=True)(tokens).astype(self.dtype)  # (B, M, Cv)
        hd = self.width // self.heads
        q = Projection((self.heads, hd), ("embed",), ("heads", "kv"), dtype=self.dtype,
                       name="q")(q)  # (Q, h, hd)
        k = Projection((self.heads, hd), ("embed",), ("heads", "kv"), dtype=self.dtype,
                       name="k")(kv)  # (B, M, h, hd)
        v = Projection((self.heads, hd), ("embed",), ("heads", "kv"), dtype=self.dtype,
                       name="v")(kv)
        q = jnp.broadcast_to(q[None], (tokens.shape[0],) + q.shape)  # (B, Q, h, hd)
        out = jax.nn.dot_product_attention(q, k, v)  # (B, Q, h, hd)
        return Projection((self.width,), ("heads", "kv"), ("embed",), dtype=self.dtype,
                          name="out")(out)  # (B, Q, D)


class CaptionDecoder(nn.Module):
    """(visual tokens (B, M, Cv), ids (B, L)) -> next-token logits (B, L, vocab), float32."""

    size: CaptionDecoderSize
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, visual_tokens: jax.Array, ids: jax.Array) -> jax.Array:
        s = self.size
        pooled = AttentionPooler(s.width, s.heads, s.num_queries, self.dtype,
                                 name="pooler")(visual_tokens)  # (B, Q, D)
        embed = self.param("token_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")), (s.vocab_size, s.width),
            jnp.float32)
        x = jnp.take(embed, ids, axis=0).astype(self.dtype)  # (B, L, D)
        for i in range(s.layers):
            x = ParallelCausalBlock(s.heads, s.ff_mult, self.dtype, name=f"causal_{i}")(x)
            x = CrossBlock(s.heads, s.ff_mult, self.dtype, name=f"cross_{i}")(x, pooled)
        x = _norm("predictor_norm_1", use_bias=True)(x).astype(self.dtype)
        x = nn.Dense(s.width, dtype=self.dtype, name="predictor_fc",
                     kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                              ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                            ("mlp",)))(x)
        x = nn.gelu(x, approximate=False)
        x = _norm("predictor_norm_2", use_bias=True)(x).astype(self.dtype)
        logits = nn.Dense(s.vocab_size, dtype=self.dtype, name="predictor_out",
                          kernel_init=nn.with_logical_partitioning(
                              nn.initializers.xavier_uniform(), ("embed", "vocab")),
                          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                 ("vocab",)))(x)
        return logits.astype(jnp.float32)  # (B, L, vocab)
