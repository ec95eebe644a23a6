"""Cross-Model Attention (InternVideo's coordination of the two encoders, spec.md section 4).

Both encoders are frozen (their forward runs deterministically: no dropout or drop path,
BatchNorm on its running statistics). Trainable, and nothing else: the gated cross-attention
blocks, the UniFormerV2 query token (backbone/temporal_cls_token, reached through the frozen global
UniBlocks), both classification heads and the two score weights.

A gated block (Flamingo-style) on queries x (B, Nq, Dq) and another encoder's tokens c (B, Nk, Dk):
    c' = LN(c) @ context_proj                        (B, Nk, Dq): keys/values at the query width
    x  = x + tanh(attn_gate) * MHCA(LN(x), c')       attn_gate (1,), initialised 0
    x  = x + tanh(ffn_gate) * FFN(LN(x))             ffn_gate (1,), initialised 0
so at initialisation every block is the identity, exactly (x + 0 * y == x).

Directions (`directions`, each `depth` blocks, the two updated in parallel at each depth):
  'uniformer_from_videomae'  the UniFormerV2 query (its fused feature, (B, 1, Du)) attends to the
                             VideoMAE tokens (B, N, Dm)
  'videomae_from_uniformer'  the VideoMAE tokens attend to [UniFormerV2 query, the last global
                             UniBlock's video tokens] (B, 1 + T'(1+hw), Du)
The default is both (the paper's figure: the multimodal encoder's query tokens read the masked
video encoder and its tokens read the multimodal encoder), after the encoders' last layers.

Outputs: each head's logits on its updated features and `logits` = log(w_m softmax(videomae) +
w_u softmax(uniformer)), w = softmax(combine) (initialised equal: the score-averaging ensemble).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models import uniformerv2, videomae
from internvideo_jax.models.clip import ClipLayerNorm, ClipMlp, FusedAttention
from internvideo_jax.models.layers import constrain, zeros

Dtype = Any
DIRECTIONS = ("uniformer_from_videomae", "videomae_from_uniformer")


class GatedCrossAttention(nn.Module):
    """x (B, Nq, Dq), context (B, Nk, Dk) -> (B, Nq, Dq); the identity at initialisation."""

    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        d = x.shape[-1]
        context = nn.Dense(d, dtype=self.dtype, name="context_proj", kernel_init=(
            nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, "embed"))),
            bias_init=nn.with_logical_partitioning(zeros, ("embed",)))(
                ClipLayerNorm(self.dtype, name="context_norm")(context))  # (B, Nk, Dq)
        gate = lambda name: jnp.tanh(self.param(name, nn.with_logical_partitioning(  # noqa: E731
            zeros, (None,)), (1,), jnp.float32)).astype(self.dtype)
        y = FusedAttention(self.num_heads, dtype=self.dtype, name="attn")(
            ClipLayerNorm(self.dtype, name="ln_1")(x), context)  # (B, Nq, Dq)
        x = x + gate("attn_gate") * y
        y = ClipMlp(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp")(
            ClipLayerNorm(self.dtype, name="ln_2")(x))
        return x + gate("ffn_gate") * y


class CrossModelAttention(nn.Module):
    """(videomae_video (B, T, S, S, 3), uniformer_video (B, T, S, S, 3), each normalised its
    own way) -> {'logits', 'videomae', 'uniformer'} (B, classes) each (see module doc)."""

    videomae_size: videomae.VideoMAESize
    uniformer_size: uniformerv2.UniFormerV2Size
    num_classes: int
    temporal_kernel: int = 1
    temporal_stride: int = 1
    local: bool = False
    directions: tuple[str, ...] = DIRECTIONS
    depth: int = 1
    heads: int = 8
    head_dropout: float = 0.0
    pos_grid: tuple[int, int, int] | None = None
    dtype: Dtype = jnp.float32

    def setup(self):
        unknown = set(self.directions) - set(DIRECTIONS)
        if unknown or not self.directions:
            raise ValueError(f"cma directions {self.directions}: choose one or both of "
                             f"{DIRECTIONS}.")
        self.videomae = videomae.VideoMAEClassifier(
            self.videomae_size, self.num_classes, dropout=self.head_dropout, dtype=self.dtype,
            pos_grid=self.pos_grid)
        self.uniformerv2 = uniformerv2.UniFormerV2Classifier(
            self.uniformer_size, self.num_classes, self.temporal_kernel, self.temporal_stride,
            self.local, cls_dropout=self.head_dropout, dtype=self.dtype)
        self.u_from_m = [GatedCrossAttention(self.heads, dtype=self.dtype)
                         for _ in range(self.depth)] \
            if "uniformer_from_videomae" in self.directions else []
        self.m_from_u = [GatedCrossAttention(self.heads, dtype=self.dtype)
                         for _ in range(self.depth)] \
            if "videomae_from_uniformer" in self.directions else []
        self.combine = self.param("combine", nn.with_logical_partitioning(zeros, (None,)), (2,),
                                  jnp.float32)

    def __call__(self, videomae_video: jax.Array, uniformer_video: jax.Array,
                 deterministic: bool = True) -> dict:
        # The frozen encoders: their own forward, deterministic. No gradient reaches VideoMAE.
        m = jax.lax.stop_gradient(self.videomae.tokens(videomae_video, True))  # (B, N, Dm)
        fused, _, u_tokens = self.uniformerv2.features(uniformer_video, True)
        q = fused[:, None]  # (B, 1, Du)
        for i in range(self.depth):
            u_context = jnp.concatenate([q, u_tokens], axis=1)  # (B, 1+T'(1+hw), Du)
            new_q = self.u_from_m[i](q, m) if self.u_from_m else q
            m = self.m_from_u[i](m, u_context) if self.m_from_u else m
            q = constrain(new_q, "act_batch", None, "act_embed")
        m_logits = self.videomae.classify(m, deterministic).astype(jnp.float32)
        u_logits = self.uniformerv2.classify(q[:, 0], deterministic).astype(jnp.float32)
        w = jax.nn.softmax(self.combine)
        logits = jnp.logaddexp(jnp.log(w[0]) + jax.nn.log_softmax(m_logits),
                               jnp.log(w[1]) + jax.nn.log_softmax(u_logits))  # log p (B, K)
        return {"logits": logits, "videomae": m_logits, "uniformer": u_logits}
