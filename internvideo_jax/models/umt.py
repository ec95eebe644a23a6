"""Unmasked-teacher distillation (UMT, OpenGVLab/unmasked_teacher; InternVideo2 stage 1): a
VideoMAE-style student on the tokens a frozen teacher attends to, regressing the teacher's tokens.

Follows the reference (single_modality/models/clip.py, modeling_pretrain_umt.py,
engines/engine_for_pretraining_umt.py; InternVideo2/single_modality for several teachers):
  - teacher (frozen, the whole clip): a CLIP ViT run per frame (ClipTeacher: our UniFormerV2 /
    multimodal video tower's backbone, the global UniBlocks unused) or a VideoMAE encoder
    (VideoMAETeacher). It returns the residual stream after each of its last k layers (the
    reference's return_index: layers L-1, L-2, ..., L-k, stacked in ascending order). A CLIP
    teacher with a visual projection applies ln_post and @ proj to every returned layer (as
    UMT's CLIP teacher); a VideoMAE teacher applies its final norm to its last layer only (as
    InternVideo2's MAE teacher). Every target is then L2-normalised.
  - attention-guided masking: the CLIP teacher's last layer's class-token attention (the
    softmax over [cls, patches] of that frame, averaged over heads; the patch columns, which do
    not sum to one) per frame; the student keeps per frame HW - int(HW * mask_ratio) tokens,
    drawn without replacement with probability proportional to the attention
    (torch.multinomial in the reference: here the Gumbel-top-k trick, the same distribution),
    or the top ones deterministically (`attention_visible(..., rng=None)`; ties go to the lower
    token index).
  - student: patch embed + sinusoid positions + ViT blocks on the visible tokens (ascending
    token order); the outputs of its last k layers (student layer depth-1-j <-> teacher layer
    L-1-j) go through the encoder's final norm (shared, UMT), + a sinusoid table of the
    student's width at the visible positions, then one head per layer: Linear(D -> teacher
    width) -> LayerNorm (eps 1e-6) -> L2-normalise (the reference's Linear_Decoder).
  - loss per teacher: mean over layers, clips and visible tokens of 2 - 2 <student, teacher>
    (= the squared distance of the two unit vectors, UMT's clip_loss_type 'l2'); the total is
    the sum over teachers with their weights.
The student's parameters are VideoMAEEncoder's (encoder/patch_embed, encoder/transformer/
blocks_i, encoder/norm): a VideoMAE fine-tuning run loads them with init_from.

Time alignment: the student (tubelet pt) has T / pt token slices; a teacher whose temporal patch
is tt (CLIP: conv1's temporal stride, 1; VideoMAE: its tubelet) sees every (pt / tt)-th frame of
the clip (`frame_step`), so that its token slices are the student's (InternVideo2's rule: its
student and CLIP teacher see every 2nd frame, the tubelet-2 MAE teacher all of them).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax.models import layers, naming
from internvideo_jax.models.clip import ClipLayerNorm, InitStds, ResidualAttentionBlock
from internvideo_jax.models.uniformerv2 import temporal_patch_embed, torch_default
from internvideo_jax.models.videomae import VideoMAESize, token_grid

Dtype = Any


# UMT's students: tubelet 1 (a VideoMAE size has tubelet 2); decoder fields unused (no decoder).
STUDENT_SIZES: dict[str, VideoMAESize] = {
    "B/16_t1": VideoMAESize(dim=768, depth=12, heads=12, decoder_dim=384, decoder_heads=6,
                            decoder_depth=4, tubelet=1),
    "L/16_t1": VideoMAESize(dim=1024, depth=24, heads=16, decoder_dim=512, decoder_heads=8,
                            decoder_depth=12, tubelet=1),
}


def get_student_size(name: str) -> VideoMAESize:
    """A student size: STUDENT_SIZES, else a VideoMAE size (models/videomae.py)."""
    if name in STUDENT_SIZES:
        return STUDENT_SIZES[name]
    if name in videomae_sizes():
        return videomae_sizes()[name]
    raise ValueError(f"Unknown UMT student size {name!r}; choose one of "
                     f"{sorted(STUDENT_SIZES) + sorted(videomae_sizes())}.")


def videomae_sizes() -> dict:
    from internvideo_jax.models.videomae import SIZES
    return SIZES


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| over the last axis, in float32 (eps guards an all-zero vector)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def returned_layers(depth: int, k: int) -> tuple[int, ...]:
    """The last k layers of a depth-layer stack, ascending (the reference's return_index,
    depth - 1 - i for i < k, in the order the forward pass meets them)."""
    if not 1 <= k <= depth:
        raise ValueError(f"{k} distilled layers asked of a {depth}-layer model: set the teacher's "
                         f"`layers` to 1..{depth}.")
    return tuple(range(depth - k, depth))


# ---- attention-guided masking ------------------------------------------------------------------
def num_visible(tokens_per_frame: int, mask_ratio: float) -> int:
    """Visible tokens per frame: HW - int(HW * mask_ratio) (the reference's N_vis)."""
    return tokens_per_frame - int(tokens_per_frame * mask_ratio)


def attention_visible(scores: jax.Array, keep: int, rng: jax.Array | None = None) -> jax.Array:
    """Visible token indices from per-frame attention scores.

    Args:
      scores: (B, T', HW) non-negative importance of each token of each frame.
      keep: tokens kept per frame.
      rng: None: the `keep` highest scores of each frame (ties: the lower index first); a key:
        `keep` tokens drawn without replacement with probability proportional to the scores
        (the reference's torch.multinomial(attn, N)[:, :N_vis]; Gumbel-top-k).
    Returns:
      (B, T' * keep) int32 indices into the clip's T' * HW tokens, ascending.
    """
    b, t, hw = scores.shape
    key = jnp.log(jnp.maximum(scores.astype(jnp.float32), 1e-30))
    if rng is not None:
        key = key + jax.random.gumbel(rng, key.shape, jnp.float32)
    # stable sort of -key: equal keys keep index order, so the lower index wins a tie
    order = jnp.argsort(-key, axis=-1, stable=True)[..., :keep]  # (B, T', keep)
    idx = jnp.sort(order, axis=-1) + (jnp.arange(t) * hw)[None, :, None]
    return idx.reshape(b, t * keep).astype(jnp.int32)


def mask_of(visible_idx: jax.Array, num_tokens: int) -> jax.Array:
    """(B, K) visible indices -> (B, N) bool mask, True = masked."""
    b = visible_idx.shape[0]
    return jnp.ones((b, num_tokens), bool).at[jnp.arange(b)[:, None], visible_idx].set(False)


# ---- teachers -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClipTeacherSize:
    """A CLIP ViT backbone run per frame (UniFormerV2's conv1 may be temporal)."""

    width: int
    layers: int
    heads: int
    patch: int
    image_size: int
    temporal_kernel: int = 1
    temporal_stride: int = 1
    proj_dim: int = 0  # > 0: ln_post and a visual projection to this width (multimodal tower)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def out_dim(self) -> int:
        return self.proj_dim or self.width

    @property
    def frames_per_token(self) -> int:
        return self.temporal_stride


class ClipTeacher(nn.Module):
    """(B, T, S, S, 3) normalised -> (targets (k, B, T' * g * g, D) L2-normalised float32,
    class-token attention (B, T', g * g) float32 of the last layer, averaged over heads).

    Parameters are named as UniFormerV2Encoder's backbone (conv1, class_embedding,
    positional_embedding, ln_pre, resblocks_i) plus ln_post / proj when size.proj_dim."""

    size: ClipTeacherSize
    num_layers: int  # k
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array):
        s = self.size
        b, t, h, w, _ = video.shape
        if h != s.image_size or w != s.image_size:
            raise ValueError(f"the {s.image_size}px CLIP teacher got {h}x{w} frames: set the "
                             f"teacher's `resolution` to {s.image_size}.")
        kernel = self.param("conv1", nn.with_logical_partitioning(
            torch_default, (None, None, None, None, "embed")),
            (s.temporal_kernel, s.patch, s.patch, 3, s.width), jnp.float32)
        x = temporal_patch_embed(video.astype(self.dtype), kernel.astype(self.dtype),
                                 s.temporal_stride)  # (B, T', g, g, W)
        t2, g = x.shape[1], s.grid
        x = x.reshape(b * t2, g * g, s.width)
        cls = self.param("class_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(s.width ** -0.5), ("embed",)), (s.width,), jnp.float32)
        pos = self.param("positional_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(s.width ** -0.5), (None, "embed")), (1 + g * g, s.width),
            jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b * t2, 1, s.width)), x],
                            axis=1) + pos.astype(self.dtype)  # (B*T', 1 + g*g, W)
        x = ClipLayerNorm(self.dtype, name="ln_pre")(x)
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        keep = returned_layers(s.layers, self.num_layers)
        stds = InitStds.for_stack(s.width, s.layers)
        kept, attn = [], None
        for i in range(s.layers):
            block = ResidualAttentionBlock(s.heads, stds, dtype=self.dtype,
                                           name=naming.layer_name(naming.RESBLOCKS, i))
            x_in, x = x, block(x, True)
            if i == s.layers - 1:
                attn = _cls_attention(block, x_in)  # of the last layer's input
            if i in keep:
                kept.append(x)
        y = jnp.stack(kept)[:, :, 1:]  # (k, B*T', g*g, W): patch tokens
        if s.proj_dim:
            proj = self.param("proj", nn.with_logical_partitioning(
                nn.initializers.normal(s.width ** -0.5), ("embed", None)),
                (s.width, s.proj_dim), jnp.float32)
            y = ClipLayerNorm(self.dtype, name="ln_post")(y) @ proj.astype(self.dtype)
        y = l2_normalize(y).reshape(len(keep), b, t2 * g * g, -1)
        return y, attn.reshape(b, t2, g * g)


def _cls_attention(block: nn.Module, x: jax.Array) -> jax.Array:
    """The class token's attention over [cls, patches] in `block` (a ResidualAttentionBlock) for
    input x (N, 1 + P, W), averaged over heads, patch columns -> (N, P) float32. Computed from
    the block's own ln_1 and in_proj parameters, after the block ran (its parameters exist)."""
    p = nn.meta.unbox(block.variables["params"])
    ln, att = p["ln_1"]["ln"], p["attn"]
    x32 = x.astype(jnp.float32)
    mu = x32.mean(-1, keepdims=True)
    var = ((x32 - mu) ** 2).mean(-1, keepdims=True)
    hn = (x32 - mu) * jax.lax.rsqrt(var + 1e-5) * ln["scale"] + ln["bias"]  # (N, L, W)
    kernel = att["in_proj_kernel"].astype(jnp.float32)  # (W, 3, h, hd)
    bias = att["in_proj_bias"].astype(jnp.float32)  # (3, h, hd)
    q = jnp.einsum("nd,dhk->nhk", hn[:, 0], kernel[:, 0]) + bias[0]  # (N, h, hd)
    k = jnp.einsum("nld,dhk->nlhk", hn, kernel[:, 1]) + bias[1]  # (N, L, h, hd)
    logits = jnp.einsum("nhk,nlhk->nhl", q, k) / np.sqrt(q.shape[-1])
    return jax.nn.softmax(logits, axis=-1).mean(axis=1)[:, 1:]  # (N, P)


class ViTTokens(nn.Module):
    """VideoMAEEncoder's computation and parameters (patch_embed, transformer, norm), returning
    the outputs of the layers `keep` (len(keep), B, K or N, D) instead of the last one.
    norm: 'all' applies the final norm to every returned layer (the UMT student), 'last' to the
    last layer only (InternVideo2's MAE teacher), 'none' (a classifier's encoder: no norm)."""

    size: VideoMAESize
    keep: tuple[int, ...]
    norm: str = "all"
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False

    @nn.compact
    def __call__(self, video: jax.Array, visible_idx: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        s = self.size
        grid = token_grid(video.shape, s)
        x = layers.TubeletEmbed(s.dim, (s.tubelet, s.patch, s.patch), self.dtype,
                                name="patch_embed")(video, visible_idx)
        pos = jnp.asarray(layers.sinusoid_table(int(np.prod(grid)), s.dim)).astype(x.dtype)
        x = x + (pos[None] if visible_idx is None else pos[visible_idx])
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        _, kept = layers.Transformer(s.depth, s.heads, s.mlp_dim, self.drop_path_rate,
                                     dtype=self.dtype, remat=self.remat, scan=self.scan,
                                     keep=self.keep, name="transformer")(x, deterministic)
        if self.norm == "none":
            return kept
        norm = layers.layer_norm(1e-6, "norm", self.dtype)
        if self.norm == "all":
            return norm(kept)
        if self.keep[-1] != s.depth - 1:
            return kept
        return jnp.concatenate([kept[:-1], norm(kept[-1:])], axis=0)


class VideoMAETeacher(nn.Module):
    """(B, T, S, S, 3) normalised -> (targets (k, B, N, D) L2-normalised float32, None): the
    last k layers of a VideoMAE encoder on the whole clip, its final norm (when it has one) on
    the last layer, as InternVideo2's MAE teacher. No class token: it cannot guide masking."""

    size: VideoMAESize
    num_layers: int
    final_norm: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array):
        keep = returned_layers(self.size.depth, self.num_layers)
        y = ViTTokens(self.size, keep, "last" if self.final_norm else "none", dtype=self.dtype,
                      name="encoder")(video)
        return l2_normalize(y), None


# ---- student and the whole model ----------------------------------------------------------------
class AlignHead(nn.Module):
    """The reference's Linear_Decoder: Linear (xavier, zero bias) -> LayerNorm (1e-6) -> L2."""

    out_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.out_dim, dtype=self.dtype, name="proj",
                     kernel_init=nn.with_logical_partitioning(layers.xavier_uniform(),
                                                              ("embed", None)),
                     bias_init=nn.with_logical_partitioning(layers.zeros, (None,)))(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="norm",
                         scale_init=nn.with_logical_partitioning(layers.ones, (None,)),
                         bias_init=nn.with_logical_partitioning(layers.zeros, (None,)))(
                             x.astype(jnp.float32))
        return l2_normalize(x)


class UMTDistill(nn.Module):
    """The student (encoder: VideoMAEEncoder's parameters; heads_i/layer_j: teacher i's head of
    its j-th distilled layer) and the teachers (teacher_i).
    teach(teacher videos, one per teacher) -> ((targets (k, B, N, D), class-token attention
    (B, T', HW) or None), ...); learn(video, visible_idx (B, K)) -> ((k_i, B, K, D_i), ...)
    L2-normalised, from the encoder's last k_i layers (normed) + a sinusoid table at the visible
    positions; __call__ runs both (for init)."""

    student: VideoMAESize
    teachers: tuple  # ((kind, size, k, out_dim, dtype, final_norm), ...)
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan: bool = False

    def setup(self):
        keep = returned_layers(self.student.depth, max(t[2] for t in self.teachers))
        self.encoder = ViTTokens(self.student, keep, "all", self.drop_path_rate, self.dtype,
                                 self.remat, self.scan)
        self.heads = [Heads(t[3], t[2], self.dtype) for t in self.teachers]
        self.teacher = [ClipTeacher(size, k, dtype) if kind == "clip" else
                        VideoMAETeacher(size, k, final_norm, dtype)
                        for kind, size, k, _, dtype, final_norm in self.teachers]

    def teach(self, videos: tuple):
        return tuple(t(v) for t, v in zip(self.teacher, videos))

    def learn(self, video, visible_idx, deterministic: bool = True):
        kept = self.encoder(video, visible_idx, deterministic)  # (k, B, K, D)
        n = int(np.prod(token_grid(video.shape, self.student)))
        pos = jnp.asarray(layers.sinusoid_table(n, self.student.dim)).astype(kept.dtype)
        kept = kept + pos[visible_idx][None]
        return tuple(h(kept[kept.shape[0] - t[2]:]) for h, t in zip(self.heads, self.teachers))

    def __call__(self, video, teacher_videos, visible_idx, deterministic: bool = True):
        return self.teach(teacher_videos), self.learn(video, visible_idx, deterministic)


class Heads(nn.Module):
    """One teacher's heads: layer_j for its j-th distilled layer -> (k, B, K, out) normalised."""

    out_dim: int
    k: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return jnp.stack([AlignHead(self.out_dim, self.dtype, name=f"layer_{j}")(x[j])
                          for j in range(self.k)])


def distill_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """UMT's 'l2' loss of L2-normalised (k, B, K, D) predictions and targets:
    mean of 2 - 2 <pred, target> (= mean squared distance of the unit vectors)."""
    dot = jnp.sum(pred.astype(jnp.float32) * target.astype(jnp.float32), axis=-1)
    return jnp.mean(2.0 - 2.0 * dot)
