"""ActionFormer: single-stage temporal action localization over per-frame (snippet) features.

Follows ActionFormer (Zhang et al., ECCV 2022; happyharrycn/actionformer_release, libs/modeling):
  - embedding: arch[0] masked 1-D convs (kernel `size.kernel`, no bias) each followed by LayerNorm
    and ReLU (ConvTransformerBackbone with embd_with_ln); with `abs_pe` the fixed sinusoid table
    scaled by 1/sqrt(D) is added at the valid frames (use_abs_pe, the ActivityNet model);
  - stem: arch[1] pre-LN transformer blocks at full resolution; branch: arch[2] blocks that each
    halve the length. A block's attention is LocalMaskedMHCA: depthwise conv (kernel 3, stride 1 or
    2, no bias) + LayerNorm before each of the q, k, v projections, softmax over the band
    |i - j| <= window // 2 of valid keys at the block's output level (window <= 1: over every
    valid key, MaskedMHCA; one window for all levels or one per level), an output projection;
    the skip path is a max-pool (kernel 3, stride 2) in a downsampling block;
    the MLP is D -> mlp_ratio D -> D with exact GELU; drop path on both residual branches, with a
    per-channel scale initialised to 1e-4 (AffineDropPath) when path_drop > 0;
  - pyramid: the stem's output and each branch block's output, levels l = 0..arch[2] with stride
    2**l frames; FPNIdentity: one LayerNorm per level;
  - heads shared across levels: (head_layers - 1) x [masked conv (no bias), LayerNorm, ReLU], then
    a masked conv to the K class logits (bias -log((1 - p) / p), the focal-loss prior) or to the
    2 offsets (to the segment's start and end) times a learnable per-level scalar (init 1), ReLU.
Weights are initialised as PyTorch's default for Conv1d (uniform +-1/sqrt(fan_in)) with zero
biases, as the reference.

Simplifications and differences:
  - No relative position encoding (use_rel_pe, off in every reference config). The absolute
    one is the table for T positions at any T, where the reference linearly interpolates its
    max_len table for longer inference inputs.
  - Padding is exact: every masked conv zeroes its input at padded frames (the reference only
    zeroes its output, and the LayerNorm + ReLU after it turns padded frames into relu(LN bias),
    which the next conv then sees), and the skip max-pool takes padded frames as -inf. Features
    with extra padded frames therefore give the same outputs on the valid frames.
  - A downsampled mask keeps every other entry (mask[:, ::2]), which is what the reference's
    nearest interpolation to half the length picks.
  - Dropout (`dropout`, the reference's proj_pdrop) acts after the attention's output projection
    and after the MLP's GELU and second layer; there is no dropout on the attention map (the
    reference passes attn_pdrop=0).
  - The length needs only T % 2**arch[2] == 0: local attention pads its query chunks itself, where
    the reference's sliding chunks also need T divisible by stride * 2 * (window // 2) per level.

Local attention (local_attention) never forms the (B, heads, T, T) logits of a banded mask over
full attention when the band is narrow: queries go in chunks of c >= 2r rows (r = window // 2,
about `block` rows, equal chunks), each against the c + 2r keys its band can reach, so the logits
take B * heads * T * (c + 2r) floats (T = 2304, window 19, block 64: 82 per query instead of 2304).
Full attention (window <= 1) forms B * heads * T * T.

Shapes: features (B, T, C) channel-last, mask (B, T) bool, True = a valid frame.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax.models import layers
from internvideo_jax.models.attention import attention

Dtype = Any
Names = tuple[str | None, ...]

NORM_EPS = 1e-5  # the reference's LayerNorm over channels
QKV_KERNEL = 3  # depthwise q/k/v convs and the skip max-pool: kernel stride + 1 = 3 for stride 2


def torch_default_init(in_axis=-2, out_axis=-1) -> layers.Initializer:
    """PyTorch's default Conv1d / Linear weight init, kaiming_uniform(a=sqrt 5): uniform in
    +-1/sqrt(fan_in), fan_in = inputs x kernel taps."""
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=in_axis,
                                            out_axis=out_axis)


@dataclasses.dataclass(frozen=True)
class ActionFormerSize:
    """One ActionFormer architecture; the defaults are the reference's THUMOS14 model."""

    input_dim: int  # feature channels C (THUMOS14 I3D: 2304)
    embed_dim: int = 512
    num_heads: int = 4
    arch: tuple[int, int, int] = (2, 2, 5)  # (embedding convs, stem blocks, downsampling blocks)
    window: int | tuple[int, ...] = 19  # band |i - j| <= window // 2 (<= 1: full attention);
    # an int for every level or one per level (1 + arch[2] entries)
    mlp_ratio: float = 4.0
    head_dim: int = 512  # width of the classification and regression heads
    head_layers: int = 3  # convs per head, the output conv included
    kernel: int = 3  # embedding and head convs
    abs_pe: bool = False  # add the sinusoid position table after the embedding

    def __post_init__(self):
        if len(self.arch) != 3 or min(self.arch) < 0:
            raise ValueError(f"arch={self.arch}: expected 3 counts >= 0 (embedding convs, stem "
                             f"blocks, downsampling blocks).")
        if self.kernel % 2 != 1:
            raise ValueError(f"kernel={self.kernel}: masked convs need an odd kernel (same "
                             f"padding, outputs aligned with inputs).")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by "
                             f"num_heads={self.num_heads}.")
        if self.head_layers < 1:
            raise ValueError(f"head_layers={self.head_layers}: a head has at least its output "
                             f"conv.")
        if isinstance(self.window, tuple) and len(self.window) != self.arch[2] + 1:
            raise ValueError(f"window={self.window}: one per pyramid level, {self.arch[2] + 1} "
                             f"for arch={self.arch}.")

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def windows(self) -> tuple[int, ...]:
        """The attention window of each pyramid level (the stem's, then each branch block's)."""
        if isinstance(self.window, tuple):
            return self.window
        return (self.window,) * (self.arch[2] + 1)

    @property
    def strides(self) -> tuple[int, ...]:
        """Each pyramid level's stride in input frames: (1, 2, 4, ..., 2**arch[2])."""
        return tuple(2 ** level for level in range(self.arch[2] + 1))


# input_dim is the features' (the localization task replaces it with its features' width).
SIZES: dict[str, ActionFormerSize] = {
    # For tests: 4 pyramid levels (strides 1, 2, 4, 8).
    "tiny": ActionFormerSize(input_dim=32, embed_dim=64, num_heads=2, arch=(1, 1, 3), window=9,
                             head_dim=64),
    # The demo: the reference's depth at 1/8 of its width (128 features: 4 at the coarsest level).
    "demo": ActionFormerSize(input_dim=128, embed_dim=64, num_heads=4, window=9, head_dim=64),
    # configs/thumos_i3d.yaml (I3D: 2048 features).
    "thumos": ActionFormerSize(input_dim=2048),
    # configs/anet_i3d.yaml: width 256, windows 7 and full attention at the 6-frame level.
    "anet": ActionFormerSize(input_dim=2048, embed_dim=256, window=(7, 7, 7, 7, 7, -1),
                             head_dim=256, abs_pe=True),
}


def get_size(name: str) -> ActionFormerSize:
    """A size by name; an unknown name fails listing the known ones."""
    if name not in SIZES:
        raise ValueError(f"Unknown ActionFormer size {name!r}; choose one of {sorted(SIZES)}.")
    return SIZES[name]


def check_length(num_frames: int, size: ActionFormerSize) -> None:
    """Fail loudly unless the coarsest level's stride divides the number of frames."""
    coarsest = size.strides[-1]
    if num_frames % coarsest:
        raise ValueError(
            f"{num_frames} feature frames are not divisible by 2**{size.arch[2]} = {coarsest}, "
            f"the stride of the coarsest pyramid level (arch={size.arch}): pad the features, with "
            f"mask False, to a multiple of {coarsest}. The local attention (window "
            f"{size.window}) adds no condition of its own.")


def local_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                    radius: int | None, block: int = 64) -> jax.Array:
    """Masked (banded) softmax attention: q, k, v (B, T, heads, head_dim) -> (B, T, heads,
    head_dim).

    Query i attends to key j iff key_mask[:, j] and (radius is None or |i - j| <= radius), with
    logits q.k / sqrt(head_dim). key_mask (B, T) bool. A query with no allowed key (only ever a
    padded one) gets a finite average of the values, for the caller to zero.
    Local attention over more than one chunk of `block` queries goes chunk by chunk (the module
    docstring gives the memory); otherwise one masked attention call.
    """
    b, t, h, hd = q.shape
    if radius is None:
        return attention(q, k, v, mask=key_mask[:, None, None, :])  # (B, T, h, hd)
    count = -(-t // block)
    rows = max(-(-t // count), 2 * radius)  # chunk c; >= 2r so a band spans at most 2 chunks
    count = -(-t // rows)
    if count == 1:
        pos = np.arange(t)
        band = np.abs(pos[:, None] - pos[None, :]) <= radius  # (T, T)
        return attention(q, k, v, mask=key_mask[:, None, None, :] & band)  # (B, T, h, hd)
    span = rows + 2 * radius  # keys a chunk's band reaches: [n c - r, n c + c + r)

    def windows(x: jax.Array) -> jax.Array:
        """(B, T, ...) -> (B * count, span, ...): chunk n's keys, zero / False outside [0, T)."""
        pad = [(0, 0), (radius, (count + 1) * rows - t - radius)] + [(0, 0)] * (x.ndim - 2)
        x = jnp.pad(x, pad).reshape(b, count + 1, rows, *x.shape[2:])  # (B, count + 1, c, ...)
        x = jnp.concatenate([x[:, :-1], x[:, 1:, :2 * radius]], axis=2)  # (B, count, span, ...)
        return x.reshape(b * count, span, *x.shape[3:])

    q = jnp.pad(q, [(0, 0), (0, count * rows - t), (0, 0), (0, 0)])
    q = q.reshape(b * count, rows, h, hd)  # (B * count, c, h, hd)
    offset = np.arange(span)[None, :] - np.arange(rows)[:, None]  # key slot - query row
    band = (offset >= 0) & (offset <= 2 * radius)  # (c, span): |query - key position| <= r
    allowed = windows(key_mask)[:, None, None, :] & band  # (B * count, 1, c, span)
    out = attention(q, windows(k), windows(v), mask=allowed)  # (B * count, c, h, hd)
    return out.reshape(b, count * rows, h, hd)[:, :t]  # (B, T, h, hd)


class MaskedConv1D(nn.Module):
    """1-D conv with 'same' padding over valid frames only (the reference's MaskedConv1D).

    __call__(x (B, T, C_in), mask (B, T) bool) -> (y (B, T / stride, features), mask[:, ::stride]):
    padded input frames count as zeros and padded output frames are zero. kernel
    (kernel_size, C_in or 1 when depthwise, features), logical names `names`; bias (features,).
    Output t is centred on input t * stride.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    depthwise: bool = False  # one filter per channel (features must equal C_in)
    use_bias: bool = True
    bias_init: layers.Initializer = layers.zeros
    names: Names = (None, None, "embed")
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        t, c = x.shape[1:]
        if t % self.stride:
            raise ValueError(f"MaskedConv1D: length {t} is not divisible by the stride "
                             f"{self.stride}.")
        groups = c if self.depthwise else 1
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(torch_default_init(), self.names),
            (self.kernel_size, c // groups, self.features), jnp.float32)
        x = jnp.where(mask[..., None], x, 0).astype(self.dtype)  # (B, T, C_in)
        half = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(self.dtype), (self.stride,), [(half, half)],
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=groups)  # (B, T / stride, features)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(self.bias_init,
                                                                   self.names[-1:]),
                              (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        out_mask = mask[:, ::self.stride]  # (B, T / stride)
        return jnp.where(out_mask[..., None], y, 0), out_mask


class LocalMaskedAttention(nn.Module):
    """ActionFormer's LocalMaskedMHCA (window > 1) / MaskedMHCA (window <= 1).

    __call__(x (B, T, D), mask (B, T) bool, deterministic) -> (out (B, T / stride, D), out_mask
    (B, T / stride)): for each of q, k, v a depthwise masked conv (kernel 3, stride `stride`, no
    bias), LayerNorm and projection D -> (heads, head_dim); local_attention with radius
    window // 2 over the valid keys; the output projection (heads, head_dim) -> D; dropout; zero at
    padded output frames.
    """

    num_heads: int
    window: int
    stride: int = 1
    dropout: float = 0.0
    block: int = 64  # query rows per chunk of local attention (local_attention)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True
                 ) -> tuple[jax.Array, jax.Array]:
        d = x.shape[-1]
        head_dim = d // self.num_heads

        def project(name: str) -> tuple[jax.Array, jax.Array]:
            y, y_mask = MaskedConv1D(d, QKV_KERNEL, self.stride, depthwise=True, use_bias=False,
                                     dtype=self.dtype, name=f"{name}_conv")(x, mask)
            y = layers.layer_norm(NORM_EPS, f"{name}_norm", self.dtype)(y)  # (B, T', D)
            y = layers.Projection((self.num_heads, head_dim), ("embed",), ("heads", "kv"),
                                  dtype=self.dtype, kernel_init=torch_default_init(0, (1, 2)),
                                  name=name)(y)  # (B, T', heads, head_dim)
            return layers.constrain(y, "act_batch", "act_length", "act_heads", None), y_mask

        q, out_mask = project("query")
        k, _ = project("key")
        v, _ = project("value")
        radius = self.window // 2 if self.window > 1 else None
        out = local_attention(q, k, v, out_mask, radius, self.block)  # (B, T', heads, head_dim)
        out = layers.constrain(out, "act_batch", "act_length", "act_heads", None)
        out = layers.Projection((d,), ("heads", "kv"), ("embed",), dtype=self.dtype,
                                kernel_init=torch_default_init((0, 1), 2),
                                name="proj")(out)  # (B, T', D)
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return jnp.where(out_mask[..., None], out, 0), out_mask


class Mlp(nn.Module):
    """The reference's two 1x1 convs: D -> hidden, exact GELU, dropout, hidden -> D, dropout."""

    hidden_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        d = x.shape[-1]
        h = nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1",
                     kernel_init=nn.with_logical_partitioning(torch_default_init(),
                                                              ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(layers.zeros, ("mlp",)))(x)
        h = layers.constrain(h, "act_batch", "act_length", "act_mlp")  # (B, T, hidden)
        h = nn.Dropout(self.dropout)(layers.gelu(h), deterministic=deterministic)
        y = nn.Dense(d, dtype=self.dtype, name="fc2",
                     kernel_init=nn.with_logical_partitioning(torch_default_init(),
                                                              ("mlp", "embed")),
                     bias_init=nn.with_logical_partitioning(layers.zeros, ("embed",)))(h)
        return nn.Dropout(self.dropout)(y, deterministic=deterministic)  # (B, T, D)


class TransformerBlock(nn.Module):
    """Pre-LN block of ActionFormer (its TransformerBlock), stride 1 or 2.

    __call__(x (B, T, D), mask (B, T), deterministic) -> (x (B, T / stride, D),
    mask (B, T / stride)):
      x = skip(x) + drop_path(gamma_1 * attn(ln1 x)); x = x + drop_path(gamma_2 * mlp(ln2 x)),
    skip = identity or max-pool (kernel 3, stride 2, padded frames as -inf); gamma_1, gamma_2
    (D,) init 1e-4 exist only when path_drop > 0 (the reference's AffineDropPath). The output is
    zero at padded frames.
    """

    num_heads: int
    window: int
    mlp_dim: int
    stride: int = 1
    dropout: float = 0.0
    path_drop: float = 0.0
    block: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True
                 ) -> tuple[jax.Array, jax.Array]:
        drop = layers.DropPath(self.path_drop)
        y, out_mask = LocalMaskedAttention(self.num_heads, self.window, self.stride, self.dropout,
                                           self.block, self.dtype, name="attn")(
            layers.layer_norm(NORM_EPS, "ln1", self.dtype)(x), mask, deterministic)
        if self.stride > 1:
            x = jnp.where(mask[..., None], x, -jnp.inf)  # (B, T, D)
            x = nn.max_pool(x, (QKV_KERNEL,), (self.stride,),
                            [(QKV_KERNEL // 2, QKV_KERNEL // 2)])  # (B, T / stride, D)
        valid = out_mask[..., None]  # (B, T', 1)
        x = jnp.where(valid, x, 0) + drop(self._scale(y, "gamma_1"), deterministic)
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        y = Mlp(self.mlp_dim, self.dropout, self.dtype, name="mlp")(
            layers.layer_norm(NORM_EPS, "ln2", self.dtype)(x), deterministic)
        x = x + drop(self._scale(jnp.where(valid, y, 0), "gamma_2"), deterministic)
        return layers.constrain(x, "act_batch", "act_length", "act_embed"), out_mask

    def _scale(self, y: jax.Array, name: str) -> jax.Array:
        if self.path_drop <= 0:
            return y
        gamma = self.param(name, nn.with_logical_partitioning(nn.initializers.constant(1e-4),
                                                              ("embed",)),
                           (y.shape[-1],), jnp.float32)
        return y * gamma.astype(y.dtype)


class PyramidHead(nn.Module):
    """A conv head shared by every pyramid level (PtTransformerClsHead / PtTransformerRegHead).

    __call__(feats [(B, T_l, D)], masks [(B, T_l)]) -> [(B, T_l, outputs)]: (num_layers - 1) x
    [masked conv to `width` (no bias), LayerNorm, ReLU], then a masked conv to `outputs` with bias
    init `out_bias_init`; zero at padded frames. regression: level l's output times a learnable
    scalar `scale_l` (init 1), then ReLU.
    """

    width: int
    outputs: int
    num_layers: int = 3
    kernel_size: int = 3
    out_bias_init: layers.Initializer = layers.zeros
    out_names: Names = (None, "embed", None)
    regression: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: list[jax.Array], masks: list[jax.Array]) -> list[jax.Array]:
        tower = [(MaskedConv1D(self.width, self.kernel_size, use_bias=False, dtype=self.dtype,
                               name=f"conv_{i}"),
                  layers.layer_norm(NORM_EPS, f"norm_{i}", self.dtype))
                 for i in range(self.num_layers - 1)]
        out_conv = MaskedConv1D(self.outputs, self.kernel_size, bias_init=self.out_bias_init,
                                names=self.out_names, dtype=self.dtype, name="out")
        results = []
        for level, (x, mask) in enumerate(zip(feats, masks)):
            for conv, norm in tower:
                x = nn.relu(norm(conv(x, mask)[0]))  # (B, T_l, width)
                x = layers.constrain(x, "act_batch", "act_length", "act_embed")
            y = out_conv(x, mask)[0]  # (B, T_l, outputs)
            if self.regression:
                scale = self.param(f"scale_{level}", nn.with_logical_partitioning(layers.ones, ()),
                                   (), jnp.float32)
                y = nn.relu(y * scale.astype(y.dtype))
            results.append(y)
        return results


class ActionFormer(nn.Module):
    """The ActionFormer backbone, FPN identity neck and heads (see the module docstring).

    __call__(features (B, T, C) float, mask (B, T) bool True = valid, deterministic) -> dict:
      cls_logits: [(B, T_l, num_classes) float32] per level l = 0..arch[2], T_l = T / 2**l;
        logits of a sigmoid (focal-loss) classifier, 0 at padded frames;
      offsets: [(B, T_l, 2) float32] distances >= 0 from each frame of level l to the action's
        start and end, in units of the level's stride (size.strides[l] input frames), 0 at
        padded frames;
      masks: [(B, T_l) bool] the valid frames of each level (mask[:, ::2**l]).
    T must be divisible by 2**arch[2] (check_length). num_classes=1 makes a class-agnostic
    (actionness) head. Under deterministic=False dropout and drop path take the 'dropout' rng.
    """

    size: ActionFormerSize
    num_classes: int
    dropout: float = 0.0  # attention output projection and MLP
    path_drop: float = 0.1  # drop path of every block (the same rate for all, as the reference)
    prior_prob: float = 0.01  # the classification bias starts at -log((1 - p) / p)
    attention_block: int = 64  # query rows per chunk of local attention (memory, not results)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array, deterministic: bool = True
                 ) -> dict[str, list[jax.Array]]:
        s = self.size
        b, t, _ = features.shape
        check_length(t, s)
        if mask.shape != (b, t):
            raise ValueError(f"mask has shape {mask.shape}, expected (batch, frames) = {(b, t)} "
                             f"for features of shape {features.shape}.")
        x = features.astype(self.dtype)  # (B, T, C)
        for i in range(s.arch[0]):
            x, _ = MaskedConv1D(s.embed_dim, s.kernel, use_bias=False, dtype=self.dtype,
                                name=f"embed_{i}")(x, mask)
            x = nn.relu(layers.layer_norm(NORM_EPS, f"embed_norm_{i}", self.dtype)(x))
            x = jnp.where(mask[..., None], x, 0)  # (B, T, D)
        if s.abs_pe:
            pos = layers.sinusoid_table(t, x.shape[-1]) / np.sqrt(x.shape[-1])  # (T, D)
            x = x + jnp.where(mask[..., None], jnp.asarray(pos, x.dtype), 0)  # (B, T, D)
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        block = dict(num_heads=s.num_heads, mlp_dim=s.mlp_dim, dropout=self.dropout,
                     path_drop=self.path_drop, block=self.attention_block, dtype=self.dtype)
        windows = s.windows
        for i in range(s.arch[1]):
            x, mask = TransformerBlock(**block, window=windows[0], name=f"stem_{i}")(
                x, mask, deterministic)
        feats, masks = [x], [mask]
        for i in range(s.arch[2]):
            x, mask = TransformerBlock(**block, window=windows[1 + i], stride=2,
                                       name=f"branch_{i}")(x, mask, deterministic)  # (B, T_l, D)
            feats.append(x)
            masks.append(mask)
        feats = [layers.layer_norm(NORM_EPS, f"fpn_norm_{level}", self.dtype)(f)
                 for level, f in enumerate(feats)]
        prior = -math.log((1 - self.prior_prob) / self.prior_prob) if self.prior_prob > 0 else 0.0
        logits = PyramidHead(s.head_dim, self.num_classes, s.head_layers, s.kernel,
                             nn.initializers.constant(prior), (None, "embed", "vocab"),
                             dtype=self.dtype, name="cls_head")(feats, masks)
        offsets = PyramidHead(s.head_dim, 2, s.head_layers, s.kernel, regression=True,
                              dtype=self.dtype, name="reg_head")(feats, masks)
        return {"cls_logits": [y.astype(jnp.float32) for y in logits],
                "offsets": [y.astype(jnp.float32) for y in offsets],
                "masks": masks}
