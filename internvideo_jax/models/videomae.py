"""VideoMAE: the masked video encoder, its pretraining decoder and its classifier.

Follows the released code (MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2), see docs/models.md:
  - tubelet patch embed (pt, p, p) with bias, tokens in (t, h, w) order, no CLS token;
  - fixed 1-D sinusoid position table over the flattened token index (not a parameter);
  - pre-LN blocks (eps 1e-6), q_bias/v_bias attention, exact GELU, linear drop path;
  - pretraining: visible tokens only through the encoder, encoder_to_decoder (no bias), a mask token,
    the decoder's own sinusoid table, decoder input = [visible + pe_vis, mask_token + pe_masked] (not
    unshuffled), the head applied to the last N_masked tokens.

Shapes: video (B, T, H, W, C) channel-last, normalized; mask (B, N) bool, True = masked, with the same
number of masked tokens in every row (tube masking guarantees it).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from input_pipelines import masking
from internvideo_jax.models import layers, pos_embed

Dtype = Any


@dataclasses.dataclass(frozen=True)
class VideoMAESize:
    """One VideoMAE architecture. Every size is defined once, here (SIZES)."""

    dim: int
    depth: int
    heads: int
    decoder_dim: int
    decoder_heads: int
    decoder_depth: int
    mlp_ratio: float = 4.0
    patch: int = 16
    tubelet: int = 2

    @property
    def mlp_dim(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @property
    def decoder_mlp_dim(self) -> int:
        # The reference's decoder blocks take the encoder's mlp_ratio (modeling_pretrain.py): 4
        # everywhere but ViT-g, whose decoder MLP is int(512 * 48 / 11) = 2234 wide.
        return int(self.decoder_dim * self.mlp_ratio)


SIZES: dict[str, VideoMAESize] = {
    # For tests and the demo (64x64 input, patch 8).
    "tiny": VideoMAESize(dim=128, depth=4, heads=4, decoder_dim=64, decoder_heads=2,
                         decoder_depth=2, patch=8),
    "S": VideoMAESize(dim=384, depth=12, heads=6, decoder_dim=192, decoder_heads=3, decoder_depth=4),
    "B": VideoMAESize(dim=768, depth=12, heads=12, decoder_dim=384, decoder_heads=6, decoder_depth=4),
    "L": VideoMAESize(dim=1024, depth=24, heads=16, decoder_dim=512, decoder_heads=8,
                      decoder_depth=12),
    "H": VideoMAESize(dim=1280, depth=32, heads=16, decoder_dim=640, decoder_heads=8,
                      decoder_depth=12),
    # InternVideo's ViT-H masked video encoder uses a narrower, shallower decoder.
    "H_internvideo": VideoMAESize(dim=1280, depth=32, heads=16, decoder_dim=512, decoder_heads=8,
                                  decoder_depth=8),
    # VideoMAEv2 ViT-g/14: patch 14, mlp ratio 48/11 (hidden 6144); the decoder of the reference's
    # pretrain_videomae_giant_patch14_224 with --decoder_depth 4 (scripts/pretrain/
    # vit_g_hybrid_pt.sh): 512 wide, 8 heads, 4 deep, mlp ratio 48/11 as the encoder's (2234).
    "g": VideoMAESize(dim=1408, depth=40, heads=16, decoder_dim=512, decoder_heads=8,
                      decoder_depth=4, mlp_ratio=48 / 11, patch=14),
}


def get_size(name: str) -> VideoMAESize:
    """A size by name; an unknown name fails listing the known ones."""
    if name not in SIZES:
        raise ValueError(f"Unknown VideoMAE size {name!r}; choose one of {sorted(SIZES)}.")
    return SIZES[name]


def token_grid(video_shape: tuple[int, ...], size: VideoMAESize) -> tuple[int, int, int]:
    """(T', H', W') token grid of a (B, T, H, W, C) video; fails loudly on indivisible shapes."""
    _, t, h, w, _ = video_shape
    if t % size.tubelet:
        raise ValueError(f"{t} frames are not divisible by the tubelet size {size.tubelet}: "
                         f"set num_frames to a multiple of {size.tubelet}.")
    if h % size.patch or w % size.patch:
        raise ValueError(f"Frame size {h}x{w} is not divisible by the patch size {size.patch}: "
                         f"set the crop size to a multiple of {size.patch}.")
    return t // size.tubelet, h // size.patch, w // size.patch


def split_by_mask(mask: jax.Array, num_masked: int) -> tuple[jax.Array, jax.Array]:
    """Indices of visible and masked tokens, each in ascending token order.

    Args:
      mask: (B, N) bool, True = masked, exactly `num_masked` True per row.
    Returns:
      visible_idx (B, N - num_masked) and masked_idx (B, num_masked), int32. This is the order the
      reference uses: x[~mask] and x[mask] keep token order.
    """
    order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)  # visible first, then masked
    n_vis = mask.shape[1] - num_masked
    return order[:, :n_vis], order[:, n_vis:]


def _mask_count_error(counts: np.ndarray, num_masked: int, mask_ratio: float) -> str:
    wrong = sorted({int(c) for c in np.asarray(counts).ravel() if int(c) != num_masked})
    return (f"the mask hides {', '.join(map(str, wrong))} tokens in some rows, but this VideoMAEPretrain (mask_ratio="
            f"{mask_ratio}) takes exactly {num_masked} per clip (int(mask_ratio * h * w) per "
            f"time slice): build the model with the mask's ratio, or the mask with the model's.")


def check_mask_count(mask: jax.Array, num_masked: int, mask_ratio: float) -> jax.Array | None:
    """The official model takes the number of masked tokens from the mask itself; ours is static
    (from mask_ratio, so that shapes are known under jit). A mask with another count would give a
    wrong-length output. A concrete mask with another count is refused at once (ValueError); a
    traced one cannot be (a host callback in the step would gather the mask across devices, and
    XLA aborts on one inside the accumulation scan), so the rows it gets wrong are returned:
    (B,) bool, True where the count is right, for the model to set the others to NaN."""
    counts = mask.sum(axis=1)  # (B,)
    if isinstance(counts, jax.core.Tracer):
        return counts == num_masked
    if (np.asarray(counts) != num_masked).any():
        raise ValueError(_mask_count_error(counts, num_masked, mask_ratio))
    return None


def gather_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x (B, N, ...) gathered along N with idx (B, K) -> (B, K, ...)."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def position_table(grid: tuple[int, int, int], dim: int,
                   trained_grid: tuple[int, int, int] | None = None) -> np.ndarray:
    """The encoder's (t*h*w, dim) sinusoid table for `grid`; built for `trained_grid` and resized
    to `grid` when that is given and differs."""
    if not trained_grid or tuple(trained_grid) == tuple(grid):
        return layers.sinusoid_table(grid[0] * grid[1] * grid[2], dim)
    source = layers.sinusoid_table(int(np.prod(trained_grid)), dim)
    return pos_embed.resize_video_table(source, tuple(trained_grid), tuple(grid))


class VideoMAEEncoder(nn.Module):
    """Patch embed + sinusoid positions + transformer (+ final norm when `final_norm`).

    __call__(video (B, T, H, W, C), visible_idx (B, K) or None) -> tokens (B, K or N, dim).
    pos_grid: the (t, h, w) token grid whose sinusoid table the weights were trained with, when it
    differs from the input's (e.g. (8, 14, 14) for a 16x224 checkpoint fine-tuned at 32x384): that
    table is resized (models/pos_embed.py: bicubic in space, linear in time), as the reference.
    """

    size: VideoMAESize
    drop_path_rate: float = 0.0
    init_values: float = 0.0
    final_norm: bool = True
    dtype: Dtype = jnp.float32
    pos_grid: tuple[int, int, int] | None = None
    remat: str = "none"  # layers.REMAT_POLICIES
    scan: bool = False  # layers.Transformer: scanned layers (params under transformer/blocks)

    @nn.compact
    def __call__(self, video: jax.Array, visible_idx: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        s = self.size
        grid = token_grid(video.shape, s)
        x = layers.TubeletEmbed(s.dim, (s.tubelet, s.patch, s.patch), self.dtype,
                                name="patch_embed")(video, visible_idx)  # (B, K or N, D)
        pos = jnp.asarray(position_table(grid, s.dim, self.pos_grid)).astype(x.dtype)  # (N, D)
        x = x + (pos[None] if visible_idx is None else pos[visible_idx])  # (B, K or N, D)
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        x = layers.Transformer(s.depth, s.heads, s.mlp_dim, self.drop_path_rate, self.init_values,
                               dtype=self.dtype, remat=self.remat, scan=self.scan,
                               name="transformer")(x, deterministic)
        if self.final_norm:
            x = layers.layer_norm(1e-6, "norm", self.dtype)(x)
        return x  # (B, K, D)


class VideoMAEPretrain(nn.Module):
    """Encoder on visible tokens, decoder predicting the pixels of masked tokens.

    __call__(video (B, T, H, W, C), mask (B, N) bool) -> (B, N_masked, tubelet*patch*patch*C)
    predictions in ascending masked-token order, pixels flattened as (pt, ph, pw, C).
    `mask_ratio` fixes the number of masked tokens: int(mask_ratio * H'W') per temporal slice; a
    mask with another count is refused (check_mask_count: an error, or NaN rows under jit).

    Dual masking (VideoMAE V2, OpenGVLab/VideoMAEv2 modeling_pretrain.py): with a
    `decoder_mask` (B, N) bool, True = not decoded (input_pipelines/masking.running_cell_mask),
    the decoder's input is [visible + pe_vis, mask_token + pe_decoded]: the K visible tokens from
    the encoder and a mask token at each of the D positions the decoder mask leaves (ascending
    token order; visible positions among them too, as the reference), and the output is
    (B, D, P): one prediction per decoded position. The loss takes those the encoder mask hid
    (losses.dual_masked_reconstruction_loss). `decoder_mask_ratio` fixes D
    (masking.num_decoded); a decoder mask with another count is refused as a mask is. Without a
    decoder mask every masked token is decoded (VideoMAE V1, and the reference's decode_mask=None),
    whatever decoder_mask_ratio: the parameters are the same either way.
    """

    size: VideoMAESize
    mask_ratio: float = 0.9
    drop_path_rate: float = 0.0
    init_values: float = 0.0
    dtype: Dtype = jnp.float32
    remat: str = "none"  # layers.REMAT_POLICIES, for the encoder and decoder blocks
    scan: bool = False  # scanned encoder and decoder layers
    decoder_mask_ratio: float = 0.0  # > 0: dual masking's decoder mask ratio (VideoMAE V2: 0.5)

    def num_masked(self, video_shape: tuple[int, ...]) -> int:
        """Masked tokens per clip: the input pipeline's tube-masking count (masking.num_masked)."""
        return masking.num_masked(token_grid(video_shape, self.size), self.mask_ratio)

    def num_decoded(self, video_shape: tuple[int, ...]) -> int:
        """Positions per clip the decoder predicts: the masked tokens without a decoder mask, else
        the running cell mask's decoded count (masking.num_decoded)."""
        if self.decoder_mask_ratio <= 0:
            return self.num_masked(video_shape)
        return masking.num_decoded(token_grid(video_shape, self.size), self.decoder_mask_ratio)

    @nn.compact
    def __call__(self, video: jax.Array, mask: jax.Array, deterministic: bool = True,
                 decoder_mask: jax.Array | None = None) -> jax.Array:
        s = self.size
        grid = token_grid(video.shape, s)
        n = grid[0] * grid[1] * grid[2]
        if mask.shape != (video.shape[0], n):
            raise ValueError(f"mask has shape {mask.shape}, expected (batch, tokens) = "
                             f"{(video.shape[0], n)} for a video of shape {video.shape}.")
        num_masked = self.num_masked(video.shape)
        right_count = None if self.is_initializing() else check_mask_count(
            mask, num_masked, self.mask_ratio)  # (B,) bool under jit, else None
        visible_idx, masked_idx = split_by_mask(mask, num_masked)
        query_idx, num_queries = masked_idx, num_masked  # the positions the decoder predicts
        if decoder_mask is not None:
            if self.decoder_mask_ratio <= 0:
                raise ValueError("a decoder_mask was given to a VideoMAEPretrain with "
                                 "decoder_mask_ratio=0: build it with the mask's ratio (0.5 for "
                                 "VideoMAE V2), or leave the decoder mask out.")
            if decoder_mask.shape != mask.shape:
                raise ValueError(f"decoder_mask has shape {decoder_mask.shape}, expected "
                                 f"{mask.shape} (the mask's).")
            num_queries = self.num_decoded(video.shape)
            right_decoded = None if self.is_initializing() else check_decoder_mask_count(
                decoder_mask, n - num_queries, self.decoder_mask_ratio)
            if right_decoded is not None:
                right_count = right_decoded if right_count is None else right_count & right_decoded
            query_idx = split_by_mask(decoder_mask, n - num_queries)[0]  # (B, D) not hidden
        x = VideoMAEEncoder(s, self.drop_path_rate, self.init_values, final_norm=True,
                            dtype=self.dtype, remat=self.remat, scan=self.scan,
                            name="encoder")(video, visible_idx, deterministic)
        x = nn.Dense(
            s.decoder_dim, use_bias=False, dtype=self.dtype, name="encoder_to_decoder",
            kernel_init=nn.with_logical_partitioning(layers.xavier_uniform(),
                                                     ("embed", None)))(x)  # (B, K, Dd)
        mask_token = self.param(
            "mask_token", nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02),
                                                       (None, None, "embed")),
            (1, 1, s.decoder_dim), jnp.float32)
        pos = jnp.asarray(layers.sinusoid_table(n, s.decoder_dim)).astype(x.dtype)  # (N, Dd)
        x_vis = x + pos[visible_idx]  # (B, K, Dd)
        x_masked = mask_token.astype(x.dtype) + pos[query_idx]  # (B, M or D, Dd)
        x = jnp.concatenate([x_vis, x_masked], axis=1)  # (B, K + M (= N) or K + D, Dd)
        x = layers.constrain(x, "act_batch", "act_length", "act_embed")
        x = VideoMAEDecoder(s, 3 * s.tubelet * s.patch * s.patch, self.drop_path_rate,
                            self.init_values, self.dtype, self.remat, self.scan,
                            name="decoder")(x, num_queries, deterministic)
        if right_count is not None:  # a mask with another count: NaN, never a wrong-length answer
            x = jnp.where(right_count[:, None, None], x, jnp.nan)
        return x  # (B, M or D, pt*p*p*3)


def check_decoder_mask_count(decoder_mask: jax.Array, num_hidden: int,
                             ratio: float) -> jax.Array | None:
    """check_mask_count for the decoder mask: exactly `num_hidden` True (not decoded) per row; a
    concrete mask with another count is refused (ValueError), a traced one gives the (B,) rows
    that are right."""
    counts = decoder_mask.sum(axis=1)  # (B,)
    if isinstance(counts, jax.core.Tracer):
        return counts == num_hidden
    wrong = sorted({int(c) for c in np.asarray(counts).ravel() if int(c) != num_hidden})
    if wrong:
        raise ValueError(f"the decoder mask hides {', '.join(map(str, wrong))} tokens in some "
                         f"rows, but this VideoMAEPretrain (decoder_mask_ratio={ratio}) takes "
                         f"exactly {num_hidden} (int(4 * ratio) of every 2x2 cell): build the "
                         f"decoder mask with masking.running_cell_mask at the model's ratio.")
    return None


class VideoMAEDecoder(nn.Module):
    """Decoder blocks, then norm and head on the last `num_masked` tokens only."""

    size: VideoMAESize
    num_outputs: int
    drop_path_rate: float = 0.0
    init_values: float = 0.0
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, num_masked: int, deterministic: bool = True) -> jax.Array:
        s = self.size
        x = layers.Transformer(s.decoder_depth, s.decoder_heads, s.decoder_mlp_dim,
                               self.drop_path_rate, self.init_values, dtype=self.dtype,
                               remat=self.remat, scan=self.scan, name="transformer")(
                                   x, deterministic)
        x = x[:, -num_masked:]  # (B, M, Dd)
        x = layers.layer_norm(1e-6, "norm", self.dtype)(x)
        return nn.Dense(
            self.num_outputs, dtype=self.dtype, name="head",
            kernel_init=nn.with_logical_partitioning(layers.xavier_uniform(),
                                                     ("embed", "patch")),
            bias_init=nn.with_logical_partitioning(layers.zeros, ("patch",)))(x)  # (B, M, P)


class VideoMAEClassifier(nn.Module):
    """Fine-tuning model: encoder (no final norm) -> mean over tokens -> fc_norm -> dropout -> head.

    __call__(video (B, T, H, W, C)) -> logits (B, num_classes). The head's initial weights are
    scaled by `head_init_scale` (0.001 in the reference) after the usual init.
    """

    size: VideoMAESize
    num_classes: int
    drop_path_rate: float = 0.0
    dropout: float = 0.0
    init_values: float = 0.0
    head_init_scale: float = 0.001
    dtype: Dtype = jnp.float32
    pos_grid: tuple[int, int, int] | None = None  # see VideoMAEEncoder
    remat: str = "none"
    scan: bool = False

    def setup(self):
        self.encoder = VideoMAEEncoder(self.size, self.drop_path_rate, self.init_values,
                                       final_norm=False, dtype=self.dtype, pos_grid=self.pos_grid,
                                       remat=self.remat, scan=self.scan)
        self.fc_norm = layers.layer_norm(1e-6, "fc_norm", self.dtype)
        self.head_dropout = nn.Dropout(self.dropout)
        scale = self.head_init_scale

        def head_init(rng, shape, dtype=jnp.float32):
            # The reference: trunc_normal(std=0.02), then weight *= init_scale (bias is 0).
            return nn.initializers.truncated_normal(0.02)(rng, shape, dtype) * scale

        self.head = nn.Dense(
            self.num_classes, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(head_init, ("embed", "vocab")),
            bias_init=nn.with_logical_partitioning(layers.zeros, ("vocab",)))

    def tokens(self, video: jax.Array, deterministic: bool = True) -> jax.Array:
        """(B, T, H, W, C) -> encoder tokens (B, N, D) (what the head pools)."""
        return self.encoder(video, None, deterministic)

    def classify(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        """(B, N, D) tokens -> (B, classes) logits: mean, fc_norm, dropout, head."""
        x = self.fc_norm(tokens.mean(axis=1))  # (B, D)
        return self.head(self.head_dropout(x, deterministic=deterministic))  # (B, classes)

    def pooled(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, T, H, W, C) -> (fc_norm(mean of tokens) (B, D), logits (B, classes)),
        deterministic: the reference's forward_features, the temporal-localization feature."""
        x = self.fc_norm(self.tokens(video).mean(axis=1))  # (B, D)
        return x, self.head(x)

    def __call__(self, video: jax.Array, deterministic: bool = True) -> jax.Array:
        return self.classify(self.tokens(video, deterministic), deterministic)
