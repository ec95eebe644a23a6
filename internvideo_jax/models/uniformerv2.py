"""UniFormerV2: a CLIP ViT made a video model with local and global UniBlocks.

Shapes: video (B, T, H, W, 3) -> conv1 (B, T', h, w, W) with T' = T / temporal_stride; per frame
tokens [cls, h*w patches] (B*T', 1 + h*w, W), CLIP residual blocks (attention within a frame);
optional local UniBlocks (local MHRA: BatchNorm3d -> 1x1x1 conv W -> W/1.5 -> depthwise (3,1,1)
conv -> 1x1x1 conv back, the last zero-initialised) before (lmhra1) and after (lmhra2) attention.
At each layer of `return_list`, a global UniBlock: a depthwise 3x3x3 conv (dpe, zero-init bias)
added to the patch tokens of a copy of the stream, then a decoder block where the running query
token (zero init, carried across blocks) attends to all T' * (1 + h*w) tokens (ln_1 on the query,
ln_3 on the tokens; out_proj and c_proj zero-init; MLP dropout 0.5). Fusion:
w = sigmoid(balance) (init 0), feature = (1 - w) * query + w * mean over frames of the last layer's
CLS; the frozen-backbone variant (`frozen`, the L/14@336 "frozen" checkpoints) has no balance and
classifies the query alone. Classifier head: LayerNorm -> dropout 0.5 -> Linear. The multimodal tower instead applies
visual_ln_post and @ visual_proj. Parameter names follow the reference (conv1, class_embedding,
positional_embedding, ln_pre, resblocks_i, temporal_cls_token, dpe_j, dec_j, balance, proj).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax.models import naming
from internvideo_jax.models.clip import (ClipLayerNorm, ClipMlp, FusedAttention, InitStds,
                                         ResidualAttentionBlock)
from internvideo_jax.models.layers import (DropPath, constrain, remat_block, scan_blocks,
                                           zeros)

Dtype = Any
# PyTorch's default conv/linear weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class UniFormerV2Size:
    """The CLIP ViT backbone and where the global UniBlocks go."""

    width: int
    layers: int
    heads: int
    patch: int
    image_size: int
    embed_dim: int  # CLIP's visual projection size (multimodal tower)
    return_list: tuple[int, ...]  # backbone layers followed by a global UniBlock

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


SIZES: dict[str, UniFormerV2Size] = {
    "tiny": UniFormerV2Size(64, 4, 4, 8, 64, 64, (2, 3)),
    "B/16": UniFormerV2Size(768, 12, 12, 16, 224, 512, (8, 9, 10, 11)),
    "L/14": UniFormerV2Size(1024, 24, 16, 14, 224, 768, (20, 21, 22, 23)),
    "L/14@336": UniFormerV2Size(1024, 24, 16, 14, 336, 768, (20, 21, 22, 23)),
}


def get_size(name: str) -> UniFormerV2Size:
    if name not in SIZES:
        raise ValueError(f"Unknown UniFormerV2 size {name!r}; known: {sorted(SIZES)}.")
    return SIZES[name]


def inflate_center(kernel_2d: np.ndarray, temporal_kernel: int) -> np.ndarray:
    """(p, p, C, W) 2-D patch kernel -> (k, p, p, C, W): zeros except the middle time slice."""
    out = np.zeros((temporal_kernel,) + kernel_2d.shape, kernel_2d.dtype)
    out[temporal_kernel // 2] = kernel_2d
    return out


def temporal_patch_embed(video: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """conv1: Conv3d(kernel (k, p, p), stride (s, p, p), padding ((k-1)/2, 0, 0), no bias).

    video (B, T, H, W, C), kernel (k, p, p, C, D) -> (B, T', H/p, W/p, D), T' = T / s (k odd,
    k >= s). As matmuls over non-overlapping patches: one per temporal tap, summed.
    """
    k, p, _, c, d = kernel.shape
    b, t, h, w, _ = video.shape
    pad = (k - 1) // 2
    padded = jnp.pad(video, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
    t_out = (t + 2 * pad - k) // stride + 1
    out = 0.0
    for tap in range(k):
        frames = padded[:, tap:tap + stride * (t_out - 1) + 1:stride]  # (B, T', H, W, C)
        patches = frames.reshape(b, t_out, h // p, p, w // p, p, c)
        out = out + jnp.einsum("bthpwqc,pqcd->bthwd", patches, kernel[tap])
    return out  # (B, T', H/p, W/p, D)


class DepthwiseConv3d(nn.Module):
    """Depthwise Conv3d with bias and zero 'same' padding on (B, T, H, W, C), odd kernel sizes.

    kernel (kt, kh, kw, C) == the PyTorch weight [C, 1, kt, kh, kw] transposed. Computed as a sum
    of kt*kh*kw shifted, per-channel-scaled copies, which XLA fuses into elementwise passes. On
    this project's 2-core CPU machine, XLA's grouped convolution took 0.64 s for the forward and
    gradient of one (32, 8, 8, 8, 64) dpe; with this form and conv1 as matmuls the tiny encoder's
    forward + gradient went from 2.84 s to 1.04 s (an ad-hoc timing, not a benchmark).
    """

    kernel_size: tuple[int, int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kt, kh, kw = self.kernel_size
        c = x.shape[-1]
        bound = 1.0 / np.sqrt(kt * kh * kw)  # PyTorch's default: fan_in = 1 channel x kernel

        def init(rng, shape, dtype=jnp.float32):
            return jax.random.uniform(rng, shape, dtype, -bound, bound)

        kernel = self.param("kernel", nn.with_logical_partitioning(
            init, (None, None, None, "embed")), (kt, kh, kw, c), jnp.float32).astype(self.dtype)
        bias = self.param("bias", nn.with_logical_partitioning(zeros, ("embed",)), (c,),
                          jnp.float32).astype(self.dtype)
        _, t, h, w, _ = x.shape
        xp = jnp.pad(x.astype(self.dtype), ((0, 0), (kt // 2, kt // 2), (kh // 2, kh // 2),
                                            (kw // 2, kw // 2), (0, 0)))
        out = jnp.zeros_like(x, dtype=self.dtype) + bias
        for a in range(kt):
            for b_ in range(kh):
                for d in range(kw):
                    out = out + xp[:, a:a + t, b_:b_ + h, d:d + w] * kernel[a, b_, d]
        return out  # (B, T, H, W, C)


class LocalMHRA(nn.Module):
    """Local UniBlock on patch tokens (B, T, h, w, C): BN -> 1x1x1 -> depthwise (3,1,1) -> 1x1x1.

    BatchNorm uses the batch statistics in training (deterministic=False; under jit over a sharded
    global batch they are the global batch's, i.e. synchronised BN) and updates the running
    averages (momentum 0.1 in PyTorch's convention); in evaluation it uses the running averages.
    """

    dw_reduction: float = 1.5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        c = x.shape[-1]
        reduced = int(c // self.dw_reduction)
        y = nn.BatchNorm(use_running_average=deterministic, momentum=0.9, epsilon=1e-5,
                         dtype=jnp.float32, name="bn")(x.astype(jnp.float32)).astype(self.dtype)
        y = nn.Dense(reduced, dtype=self.dtype, name="conv_in", kernel_init=torch_default,
                     bias_init=zeros)(y)  # (B, T, h, w, C')
        y = DepthwiseConv3d((3, 1, 1), dtype=self.dtype, name="conv_t")(y)  # (B, T, h, w, C')
        return nn.Dense(c, dtype=self.dtype, name="conv_out", kernel_init=zeros,
                        bias_init=zeros)(y)  # (B, T, h, w, C), zero at init


class UniBlockLayer(ResidualAttentionBlock):
    """One backbone layer: the CLIP block with local UniBlocks (when `local`) before attention
    (lmhra1) and between attention and MLP (lmhra2)."""

    num_frames: int = 1  # T' (after temporal downsampling)
    local: bool = False

    def _local(self, x, name, deterministic, drop_rate):
        # x (B*T, 1 + hw, C): the patch tokens as a video, residual local MHRA, back.
        bt, n, c = x.shape
        g = int(round((n - 1) ** 0.5))
        patches = x[:, 1:].reshape(bt // self.num_frames, self.num_frames, g, g, c)
        patches = patches + DropPath(self.drop_path)(
            LocalMHRA(dtype=self.dtype, name=name)(patches, deterministic), deterministic,
            drop_rate)
        return jnp.concatenate([x[:, :1], patches.reshape(bt, n - 1, c)], axis=1)

    def before_attention(self, x, deterministic, drop_rate):
        return self._local(x, "lmhra1", deterministic, drop_rate) if self.local else x

    def after_attention(self, x, deterministic, drop_rate):
        return self._local(x, "lmhra2", deterministic, drop_rate) if self.local else x


class QueryDecoder(nn.Module):
    """Global UniBlock decoder ('Extractor'): the query attends to all video tokens, then an MLP."""

    num_heads: int
    mlp_dropout: float = 0.5
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, tokens: jax.Array,
                 deterministic: bool = True) -> jax.Array:
        drop = DropPath(self.drop_path)
        y = FusedAttention(self.num_heads, zero_out=True, dtype=self.dtype, name="attn")(
            ClipLayerNorm(self.dtype, name="ln_1")(query),
            ClipLayerNorm(self.dtype, name="ln_3")(tokens))  # (B, 1, C)
        query = query + drop(y, deterministic)
        y = ClipMlp(4 * query.shape[-1], None, None, self.mlp_dropout, zero_out=True,
                    dtype=self.dtype, name="mlp")(ClipLayerNorm(self.dtype, name="ln_2")(query),
                                                  deterministic)
        return query + drop(y, deterministic)


class UniFormerV2Encoder(nn.Module):
    """Video (B, T, H, W, 3) normalised -> (fused feature (B, W), frames (B, T', 1+hw, W): the
    last layer's per-frame tokens, video tokens (B, T'(1+hw), W): what the last global UniBlock
    read, i.e. those frames with the dpe added to their patches, the only tokens that carry
    motion (backbone attention is within a frame)).

    temporal_kernel/temporal_stride: conv1's temporal (k, s) (1, 1 by default; 3, 2 = the
    reference's temporal downsample, padding (k-1)/2). T=1 (images) works with k = s = 1.
    """

    size: UniFormerV2Size
    temporal_kernel: int = 1
    temporal_stride: int = 1
    local: bool = False
    backbone_drop_path_rate: float = 0.0
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    dtype: Dtype = jnp.float32
    remat: str = "none"  # layers.REMAT_POLICIES, for the backbone layers
    scan: bool = False  # backbone layers as one nn.scan (layers.scan_blocks): 'resblocks/block'
    frozen: bool = False  # the frozen-backbone variant: no balance, the query token alone

    @nn.compact
    def __call__(self, video: jax.Array, deterministic: bool = True):
        s = self.size
        b, t, h, w, _ = video.shape
        if h != s.image_size or w != s.image_size:
            raise ValueError(f"UniFormerV2 {s.image_size}px model got {h}x{w} frames: set "
                             f"data.crop_size={s.image_size}.")
        kt, st = self.temporal_kernel, self.temporal_stride
        if t % st:
            raise ValueError(f"{t} frames are not divisible by the temporal stride {st}.")
        kernel = self.param("conv1", nn.with_logical_partitioning(
            torch_default, (None, None, None, None, "embed")), (kt, s.patch, s.patch, 3, s.width),
            jnp.float32)
        x = temporal_patch_embed(video.astype(self.dtype), kernel.astype(self.dtype), st)
        t2, g = x.shape[1], s.grid
        x = x.reshape(b * t2, g * g, s.width)  # (B*T', hw, W)
        scale = s.width ** -0.5
        cls = self.param("class_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(scale), ("embed",)), (s.width,), jnp.float32)
        pos = self.param("positional_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(scale), (None, "embed")), (1 + g * g, s.width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b * t2, 1, s.width)), x],
                            axis=1) + pos.astype(self.dtype)  # (B*T', 1+hw, W)
        x = ClipLayerNorm(self.dtype, name="ln_pre")(x)
        x = constrain(x, "act_batch", "act_length", "act_embed")

        stds = InitStds.for_stack(s.width, s.layers)
        backbone_dpr = np.linspace(0, self.backbone_drop_path_rate, s.layers)
        dpr = np.linspace(0, self.drop_path_rate, len(s.return_list))
        query = self.param("temporal_cls_token", nn.with_logical_partitioning(
            zeros, (None, None, "embed")), (1, 1, s.width), jnp.float32)
        query = jnp.broadcast_to(query.astype(self.dtype), (b, 1, s.width))  # (B, 1, W)
        layer = remat_block(self.remat, UniBlockLayer)
        common = dict(num_heads=s.heads, stds=stds, dtype=self.dtype, num_frames=t2,
                      local=self.local)
        if self.scan:
            rate = float(self.backbone_drop_path_rate)
            x, kept = scan_blocks(layer, dict(common, drop_path=rate), x, backbone_dpr,
                                  deterministic, naming.RESBLOCKS,
                                  keep=tuple(sorted(s.return_list)))
            returned = list(kept)  # (B*T', 1+hw, W) each
        else:
            returned = []
            for i in range(s.layers):
                x = layer(**common, drop_path=float(backbone_dpr[i]),
                          name=naming.layer_name(naming.RESBLOCKS, i))(x, deterministic)
                if i in s.return_list:
                    returned.append(x)
        # The global UniBlocks read the backbone and never write to it: each runs on its layer's
        # output after the backbone has finished (the same values as interleaved).
        tokens = None
        for j, out in enumerate(returned):
            frames = out.reshape(b, t2, 1 + g * g, s.width)
            patches = frames[:, :, 1:].reshape(b, t2, g, g, s.width)
            patches = patches + DepthwiseConv3d((3, 3, 3), dtype=self.dtype,
                                                name=f"dpe_{j}")(patches)
            tokens = jnp.concatenate(
                [frames[:, :, :1], patches.reshape(b, t2, g * g, s.width)], axis=2)
            tokens = tokens.reshape(b, t2 * (1 + g * g), s.width)  # (B, T'(1+hw), W)
            query = QueryDecoder(s.heads, self.mlp_dropout, float(dpr[j]), self.dtype,
                                 name=f"dec_{j}")(query, tokens, deterministic)
        frames = x.reshape(b, t2, 1 + g * g, s.width)  # (B, T', 1+hw, W)
        if tokens is None:
            tokens = frames.reshape(b, t2 * (1 + g * g), s.width)
        if self.frozen:  # the reference's FROZEN model classifies the query token alone
            return query[:, 0], frames, tokens  # (B, W), ...
        balance = self.param("balance", nn.with_logical_partitioning(zeros, ("embed",)),
                             (s.width,), jnp.float32)
        weight = jax.nn.sigmoid(balance).astype(self.dtype)
        fused = (1 - weight) * query[:, 0] + weight * frames[:, :, 0].mean(axis=1)  # (B, W)
        return fused, frames, tokens


class UniFormerV2Classifier(nn.Module):
    """UniFormerV2 for action recognition: encoder -> proj (LayerNorm, dropout, Linear)."""

    size: UniFormerV2Size
    num_classes: int
    temporal_kernel: int = 1
    temporal_stride: int = 1
    local: bool = False
    backbone_drop_path_rate: float = 0.0
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    cls_dropout: float = 0.5
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False
    frozen: bool = False  # UniFormerV2Encoder.frozen (fine-tuning freezes the CLIP backbone)

    def setup(self):
        self.backbone = UniFormerV2Encoder(
            self.size, self.temporal_kernel, self.temporal_stride, self.local,
            self.backbone_drop_path_rate, self.drop_path_rate, self.mlp_dropout, self.dtype,
            self.remat, self.scan, self.frozen)
        self.proj_norm = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32)
        self.proj_dropout = nn.Dropout(self.cls_dropout)
        self.proj_head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=torch_default,
                                  bias_init=zeros)

    def features(self, video: jax.Array, deterministic: bool = True):
        """-> UniFormerV2Encoder's (fused (B, W), frames, video tokens (B, T'(1+hw), W))."""
        return self.backbone(video, deterministic)

    def classify(self, fused: jax.Array, deterministic: bool = True) -> jax.Array:
        """(B, W) fused feature -> (B, classes) logits."""
        y = self.proj_dropout(self.proj_norm(fused.astype(jnp.float32)),
                              deterministic=deterministic)
        return self.proj_head(y.astype(self.dtype))

    def pooled(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, T, H, W, 3) -> (the fused feature (B, W), logits (B, classes)), deterministic."""
        fused = self.features(video)[0]  # (B, W)
        return fused, self.classify(fused)

    def __call__(self, video: jax.Array, deterministic: bool = True) -> jax.Array:
        return self.classify(self.features(video, deterministic)[0], deterministic)


class VideoTower(nn.Module):
    """The released multimodal video encoder (global UniBlocks only): -> (B, embed_dim) feature
    (fused -> visual_ln_post -> @ visual_proj) and the tokens the caption decoder reads, as the
    reference's `return_all_feats`: the last backbone layer's tokens of every frame, before
    visual_ln_post (B, T'(1+hw), W). Images are T=1 videos.

    temporal_kernel/temporal_stride: conv1's (UniFormerV2Encoder); the released towers have 1, 1
    (a 2-D patch embedding: the tokens the caption decoder reads then hold no motion)."""

    size: UniFormerV2Size
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False
    temporal_kernel: int = 1
    temporal_stride: int = 1

    @nn.compact
    def __call__(self, video: jax.Array, deterministic: bool = True):
        s = self.size
        fused, frames, _ = UniFormerV2Encoder(s, self.temporal_kernel, self.temporal_stride,
                                              drop_path_rate=self.drop_path_rate,
                                              mlp_dropout=self.mlp_dropout, dtype=self.dtype,
                                              remat=self.remat, scan=self.scan, name="encoder")(
                                                  video, deterministic)
        proj = self.param("visual_proj", nn.with_logical_partitioning(
            nn.initializers.normal(s.width ** -0.5), ("embed", None)), (s.width, s.embed_dim),
            jnp.float32)
        ln_post = ClipLayerNorm(self.dtype, name="visual_ln_post")
        feature = ln_post(fused) @ proj.astype(self.dtype)  # (B, E)
        b, t2, n, w = frames.shape
        return feature, frames.reshape(b, t2 * n, w)  # (B, E), (B, T'(1+hw), W)


def encoder_param_count(size: UniFormerV2Size, local: bool = False, temporal_kernel: int = 1,
                        dw_reduction: float = 1.5, frozen: bool = False) -> int:
    """UniFormerV2Encoder parameters by formula (checked against the module in tests)."""
    w, g = size.width, size.grid
    block = 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    if local:
        r = int(w // dw_reduction)
        block += 2 * (2 * w + (w * r + r) + (3 * r + r) + (r * w + w))  # BN scale/bias + convs
    decoder = 3 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    dpe = 27 * w + w
    n = len(size.return_list)
    return (temporal_kernel * size.patch ** 2 * 3 * w + w + (1 + g * g) * w + 2 * w
            + size.layers * block + w + n * (dpe + decoder) + (0 if frozen else w))

