"""CLIP building blocks and the CLIP text encoder (OpenAI CLIP layout, as UniFormerV2 builds on).

- LayerNorm eps 1e-5, computed in float32 whatever the compute dtype (CLIP's LayerNorm subclass).
- QuickGELU: x * sigmoid(1.702 x).
- Attention with a fused input projection: in_proj kernel (D, 3, heads, head_dim) and bias
  (3, heads, head_dim) == PyTorch's in_proj_weight [3D, D] / in_proj_bias [3D] transposed and
  split (so tensor parallelism splits heads, never q/k/v); out_proj (heads, head_dim, D) + bias.
  The same parameters serve self-attention and cross-attention (q from x, k/v from a context).
- Residual block: x + attn(ln_1 x); x + mlp(ln_2 x), mlp = c_fc -> QuickGELU -> c_proj.
- Text encoder: token + learned position embeddings (context 77), causal blocks, ln_final,
  feature at the eot token (the largest id in the row) @ text_projection (no bias).

Initialisation follows CLIP's `initialize_parameters`: token embedding std 0.02, positions 0.01,
attention in_proj std width^-0.5, out_proj and c_proj std width^-0.5 (2 layers)^-0.5, c_fc
(2 width)^-0.5, text_projection width^-0.5.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax.models import naming
from internvideo_jax.models.attention import attention
from internvideo_jax.models.layers import (DropPath, constrain, flat_xavier_uniform,
                                           remat_block, scan_blocks, zeros)

Dtype = Any
normal = nn.initializers.normal


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


class ClipLayerNorm(nn.Module):
    """LayerNorm (eps 1e-5) computed in float32; the output is cast back to `dtype`."""

    dtype: Dtype = jnp.float32
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.LayerNorm(
            epsilon=self.epsilon, dtype=jnp.float32, name="ln",
            scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            bias_init=nn.with_logical_partitioning(zeros, ("embed",)))(x.astype(jnp.float32))
        return y.astype(self.dtype)


def _std_init(std: float | None):
    """normal(std), or PyTorch-style xavier_uniform when std is None."""
    return normal(std) if std is not None else nn.initializers.xavier_uniform()


def _dense(features: int, names: tuple[str, str], init, name: str, dtype: Dtype) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(init, names),
                    bias_init=nn.with_logical_partitioning(zeros, names[1:]))


class FusedAttention(nn.Module):
    """Multi-head attention with PyTorch nn.MultiheadAttention's fused in_proj.

    __call__(x (B, Nq, D), context (B, Nk, D) or None for self-attention, mask broadcastable to
    (B, heads, Nq, Nk) with True = attend, or causal=True) -> (B, Nq, D).
    in_proj_std / out_proj_std: normal init std (None: xavier_uniform over the flat [D, 3D]
    weight, PyTorch's default for in_proj); zero_out: out_proj starts at zero (UniBlock decoder).
    """

    num_heads: int
    in_proj_std: float | None = None
    out_proj_std: float | None = None
    zero_out: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, mask=None,
                 causal: bool = False) -> jax.Array:
        d = x.shape[-1]
        h, hd = self.num_heads, d // self.num_heads
        in_init = normal(self.in_proj_std) if self.in_proj_std else flat_xavier_uniform(1)
        kernel = self.param("in_proj_kernel", nn.with_logical_partitioning(
            in_init, ("embed", "qkv", "heads", "kv")), (d, 3, h, hd), jnp.float32)
        bias = self.param("in_proj_bias", nn.with_logical_partitioning(
            zeros, ("qkv", "heads", "kv")), (3, h, hd), jnp.float32)
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        x = x.astype(self.dtype)
        if context is None:
            qkv = jnp.einsum("bnd,dthk->bnthk", x, kernel) + bias  # (B, N, 3, h, hd)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        else:
            q = jnp.einsum("bnd,dhk->bnhk", x, kernel[:, 0]) + bias[0]  # (B, Nq, h, hd)
            kv = jnp.einsum("bnd,dthk->bnthk", context.astype(self.dtype),
                            kernel[:, 1:]) + bias[1:]  # (B, Nk, 2, h, hd)
            k, v = kv[:, :, 0], kv[:, :, 1]
        q = constrain(q, "act_batch", "act_length", "act_heads", None)
        k = constrain(k, "act_batch", "act_length", "act_heads", None)
        v = constrain(v, "act_batch", "act_length", "act_heads", None)
        out = attention(q, k, v, mask=mask, is_causal=causal)  # (B, Nq, h, hd)
        out_init = zeros if self.zero_out else (
            normal(self.out_proj_std) if self.out_proj_std else flat_xavier_uniform(2))
        w_out = self.param("out_proj_kernel", nn.with_logical_partitioning(
            out_init, ("heads", "kv", "embed")), (h, hd, d), jnp.float32)
        b_out = self.param("out_proj_bias", nn.with_logical_partitioning(zeros, ("embed",)),
                           (d,), jnp.float32)
        return jnp.einsum("bnhk,hkd->bnd", out, w_out.astype(self.dtype)) + b_out.astype(
            self.dtype)  # (B, Nq, D)


class ClipMlp(nn.Module):
    """c_fc -> QuickGELU -> (dropout) -> c_proj.

    fc_std / proj_std: normal init std (None: xavier_uniform); zero_out starts c_proj at zero.
    """

    hidden_dim: int
    fc_std: float | None = None
    proj_std: float | None = None
    dropout: float = 0.0
    zero_out: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        d = x.shape[-1]
        h = _dense(self.hidden_dim, ("embed", "mlp"), _std_init(self.fc_std), "c_fc",
                   self.dtype)(x)
        h = quick_gelu(constrain(h, "act_batch", "act_length", "act_mlp"))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        proj_init = zeros if self.zero_out else _std_init(self.proj_std)
        return _dense(d, ("mlp", "embed"), proj_init, "c_proj", self.dtype)(h)  # (B, N, D)


@dataclasses.dataclass(frozen=True)
class InitStds:
    """CLIP's normal-init stds for a stack of `layers` blocks of width `width`."""

    attn: float
    proj: float
    fc: float

    @classmethod
    def for_stack(cls, width: int, layers: int) -> "InitStds":
        return cls(attn=width ** -0.5, proj=width ** -0.5 * (2 * layers) ** -0.5,
                   fc=(2 * width) ** -0.5)


class ResidualAttentionBlock(nn.Module):
    """CLIP block: x + attn(ln_1 x), then x + mlp(ln_2 x) (with optional drop path).

    before_attention / after_attention are identity hooks; UniFormerV2's backbone layer puts its
    local UniBlocks there (models/uniformerv2.UniBlockLayer). drop_rate: this layer's drop-path
    rate when it is traced (scanned layers, layers.scan_blocks); drop_path is then the switch.
    """

    num_heads: int
    stds: InitStds
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    causal: bool = False
    dtype: Dtype = jnp.float32

    def before_attention(self, x: jax.Array, deterministic: bool,
                         drop_rate: jax.Array | None) -> jax.Array:
        return x

    def after_attention(self, x: jax.Array, deterministic: bool,
                        drop_rate: jax.Array | None) -> jax.Array:
        return x

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True,
                 drop_rate: jax.Array | None = None) -> jax.Array:
        d = x.shape[-1]
        drop = DropPath(self.drop_path)
        x = self.before_attention(x, deterministic, drop_rate)
        y = FusedAttention(self.num_heads, self.stds.attn, self.stds.proj, dtype=self.dtype,
                           name="attn")(ClipLayerNorm(self.dtype, name="ln_1")(x),
                                        causal=self.causal)
        x = constrain(x + drop(y, deterministic, drop_rate), "act_batch", "act_length",
                      "act_embed")
        x = self.after_attention(x, deterministic, drop_rate)
        y = ClipMlp(int(d * self.mlp_ratio), self.stds.fc, self.stds.proj, dtype=self.dtype,
                    name="mlp")(ClipLayerNorm(self.dtype, name="ln_2")(x))
        return constrain(x + drop(y, deterministic, drop_rate), "act_batch", "act_length",
                         "act_embed")


@dataclasses.dataclass(frozen=True)
class TextSize:
    """A CLIP text tower: width, layers, heads, output embedding size, context and vocabulary."""

    width: int
    layers: int
    heads: int
    embed_dim: int
    context_length: int = 77
    vocab_size: int = 49408


TEXT_SIZES: dict[str, TextSize] = {
    "tiny": TextSize(width=64, layers=2, heads=4, embed_dim=64),
    "B/16": TextSize(width=512, layers=12, heads=8, embed_dim=512),
    "L/14": TextSize(width=768, layers=12, heads=12, embed_dim=768),
}


class TextEncoder(nn.Module):
    """CLIP text encoder: (B, 77) int ids -> (B, embed_dim) features at the eot token.

    `tokens=True` also returns the final-layer tokens (B, 77, width) after ln_final.
    scan: the blocks as one nn.scan (layers.scan_blocks; parameters under 'resblocks/block' with
    a leading 'layers' axis instead of resblocks_0.., layout.stack_layers converts).
    remat: a layers.REMAT_POLICIES name for the blocks (same outputs and parameters).
    """

    size: TextSize
    dtype: Dtype = jnp.float32
    scan: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, ids: jax.Array, tokens: bool = False):
        s = self.size
        stds = InitStds.for_stack(s.width, s.layers)
        embed = self.param("token_embedding", nn.with_logical_partitioning(
            normal(0.02), ("vocab", "embed")), (s.vocab_size, s.width), jnp.float32)
        pos = self.param("positional_embedding", nn.with_logical_partitioning(
            normal(0.01), (None, "embed")), (s.context_length, s.width), jnp.float32)
        if ids.shape[-1] != s.context_length:
            raise ValueError(f"text ids have length {ids.shape[-1]}, the text encoder's context "
                             f"is {s.context_length}: tokenize with that context length.")
        x = (jnp.take(embed, ids, axis=0) + pos).astype(self.dtype)  # (B, L, W)
        x = constrain(x, "act_batch", "act_length", "act_embed")
        block = dict(num_heads=s.heads, stds=stds, causal=True, dtype=self.dtype)
        layer = remat_block(self.remat, ResidualAttentionBlock)
        if self.scan:
            x = scan_blocks(layer, block, x, np.zeros(s.layers), True, naming.RESBLOCKS)[0]
        else:
            for i in range(s.layers):
                x = layer(**block, name=naming.layer_name(naming.RESBLOCKS, i))(x, True)
        x = ClipLayerNorm(self.dtype, name="ln_final")(x)  # (B, L, W)
        eot = jnp.argmax(ids, axis=-1)  # the eot id is the largest in the vocabulary
        pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]  # (B, W)
        proj = self.param("text_projection", nn.with_logical_partitioning(
            normal(s.width ** -0.5), ("embed", None)), (s.width, s.embed_dim), jnp.float32)
        features = pooled @ proj.astype(self.dtype)  # (B, E)
        return (features, x) if tokens else features


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def text_param_count(size: TextSize) -> int:
    """Parameters of a TextEncoder by formula (a check on the module, used in tests)."""
    w, n = size.width, size.layers
    block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    return size.vocab_size * w + size.context_length * w + n * block + 2 * w + w * size.embed_dim
