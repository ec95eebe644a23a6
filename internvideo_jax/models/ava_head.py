"""AVA spatio-temporal action detection: VideoMAE encoder + a RoIAlign head per person box.

The reference is VideoMAE's AVA fine-tuning, MCG-NJU/VideoMAE-Action-Detection (AlphAction code
base), commit 15615dbcf365fc45a3230446833c3f4183eb7f41:
  - modeling_finetune.py, VisionTransformer.forward_features: the encoder's blocks, then `norm`
    (LayerNorm eps 1e-6, the encoder's final norm; `fc_norm` is None, there is no fc_norm in this
    model), tokens reshaped (B, T', H', W', C) -> (B, C, T', H', W'), mean over T', `pooler`
    (RoIAlign, 7x7), `max_pooler` = nn.MaxPool2d((7, 7)) (the max over the 7x7 bins), flattened
    to (boxes, C); forward: `head` = nn.Linear(embed_dim, num_classes) on that, with no dropout
    in between (drop_rate only feeds pos_drop after the position embedding). num_classes 80.
    Head init: trunc_normal(std 0.02), then weight and bias *= init_scale (run_class_finetuning.py
    --init_scale, default 0.001; the bias is 0).
  - ROIPoolingCfg (same file): POOLER_RESOLUTION 7, POOLER_SCALE 0.0625 (1/16, patch 16),
    POOLER_SAMPLING_RATIO 0, POOLER_TYPE 'align3d'.
  - alphaction/modeling/poolers.py (Pooler3d) -> alphaction/layers/roi_align_3d.py (ROIAlign3d):
    torchvision.ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio), `aligned`
    not passed, so torchvision's default aligned=False; rois are [image index, x1, y1, x2, y2]
    from BoxList.bbox in "xyxy" mode. Sampling ratio 0 is torchvision's adaptive
    ceil(roi / 7) points per bin; models/roi_align.py computes it under jit (bounded, exact for
    boxes inside the frame).
  - Boxes are in the pixels of the network's input frame: data/ava.py reads the annotation boxes in
    the movie's pixels (xywh -> xyxy, clip_to_image to [0, size - 1]);
    alphaction/dataset/transforms/video_transforms.py Resize (short side 256) scales them with
    the frame (BoxList.resize), RandomClip crops 224x224 in training (BoxList.crop) and keeps the
    whole resized frame at test; data/ava_eval.py divides predictions by the movie's width and
    height. So AVA's normalised [0, 1] boxes map to x * W_in, y * H_in of the input frame (then the
    crop's shift). Test boxes are enlarged by BoxList.extend((0.1, 0.05)), training boxes jittered
    by BoxList.random_aug(0.2, 0.1, 0.1, 0.05) (modeling_finetune.py forward, sample_box): data
    steps, not the model's.
  - Checkpoints (run_class_finetuning.py): "encoder."/"backbone." prefixes stripped, `head`
    dropped when its shape differs, then a non-strict load (utils.load_state_dict): a pretraining
    checkpoint supplies `norm` (its encoder.norm); a fine-tuned classifier has fc_norm and no
    `norm`, so `norm` keeps its init (ones, zeros) there and fc_norm goes unused. The position
    table is built at 224's grid and resized per frame to the input's (h, w)
    (interpolate_pos_embed_online, bicubic): VideoMAEEncoder's pos_grid.

Parameter names here: encoder/... as VideoMAEEncoder with final_norm=True (so encoder/norm, the
path VideoMAEPretrain uses: a pretraining checkpoint loads whole, a classifier's encoder/ loads
all but norm, as the reference), and head/kernel (embed, vocab), head/bias (vocab): the
reference's head.weight (transposed) and head.bias.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models import layers
from internvideo_jax.models.roi_align import roi_align
from internvideo_jax.models.videomae import VideoMAEEncoder, VideoMAESize, token_grid

Dtype = Any

POOLS = ("max", "avg")


class AVAHead(nn.Module):
    """Encoder tokens + person boxes -> per-box class logits (multi-label: sigmoid BCE outside).

    __call__(tokens (B, N, D) in (t, h, w) order, grid (T', H', W'), boxes (B, M, 4)
    [x1, y1, x2, y2] in input pixels, patch (input pixels per token along h and w))
    -> logits (B, M, num_classes). Steps: mean over T' -> (B, H', W', D); RoIAlign
    (output_size, spatial_scale 1 / patch) -> (B, M, 7, 7, D); `pool` over the 7x7 -> (B, M, D);
    dropout; linear. The tokens come normalised (the reference's `norm` is the encoder's).
    Every box row is scored; padding rows get logits too, for the caller to mask.
    The parameters are this module's own kernel and bias, so that under the name `head` they sit
    where the reference's head Linear does.
    """

    num_classes: int
    dropout: float = 0.0  # the reference has none before its head
    pool: str = "max"  # POOLS; the reference's is max
    output_size: int = 7
    sampling_ratio: int = 0  # the reference's: adaptive (see models/roi_align.py)
    aligned: bool = False  # the reference's (torchvision's default)
    head_init_scale: float = 0.001
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, grid: tuple[int, int, int], boxes: jax.Array,
                 patch: int, deterministic: bool = True) -> jax.Array:
        if self.pool not in POOLS:
            raise ValueError(f"Unknown pool {self.pool!r}; choose one of {POOLS}.")
        b, n, d = tokens.shape
        t, h, w = grid
        if n != t * h * w:
            raise ValueError(f"{n} tokens do not fill the ({t}, {h}, {w}) grid ({t * h * w}).")
        x = tokens.reshape(b, t, h, w, d).mean(axis=1)  # (B, H', W', D)
        x = roi_align(x, boxes, self.output_size, spatial_scale=1.0 / patch,
                      sampling_ratio=self.sampling_ratio, aligned=self.aligned)  # (B, M, 7, 7, D)
        x = x.max(axis=(2, 3)) if self.pool == "max" else x.mean(axis=(2, 3))  # (B, M, D)
        x = layers.constrain(x, "act_batch", None, "act_embed")
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        scale = self.head_init_scale

        def kernel_init(rng, shape, dtype=jnp.float32):
            # The reference: trunc_normal(std=0.02), then weight *= init_scale (bias is 0).
            return nn.initializers.truncated_normal(0.02)(rng, shape, dtype) * scale

        kernel = self.param("kernel", nn.with_logical_partitioning(kernel_init, ("embed", "vocab")),
                            (d, self.num_classes), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(layers.zeros, ("vocab",)),
                          (self.num_classes,), jnp.float32)
        x = x.astype(self.dtype)
        return x @ kernel.astype(self.dtype) + bias.astype(self.dtype)  # (B, M, K)


class VideoMAEDetector(nn.Module):
    """VideoMAE encoder (final norm on) + AVAHead: the reference's AVA model.

    __call__(video (B, T, H, W, 3) normalised, boxes (B, M, 4) [x1, y1, x2, y2] in the pixels of
    this video's frames, deterministic) -> logits (B, M, num_classes).
    pos_grid: the token grid the encoder's position table was trained at, when the input's differs
    (the reference: (8, 14, 14) for a 16x224 checkpoint run on 256-short-side frames).
    """

    size: VideoMAESize
    num_classes: int
    drop_path_rate: float = 0.0
    dropout: float = 0.0
    init_values: float = 0.0
    head_init_scale: float = 0.001
    pool: str = "max"
    sampling_ratio: int = 0
    aligned: bool = False
    dtype: Dtype = jnp.float32
    pos_grid: tuple[int, int, int] | None = None
    remat: str = "none"
    scan: bool = False

    def setup(self):
        self.encoder = VideoMAEEncoder(self.size, self.drop_path_rate, self.init_values,
                                       final_norm=True, dtype=self.dtype, pos_grid=self.pos_grid,
                                       remat=self.remat, scan=self.scan)
        self.head = AVAHead(self.num_classes, self.dropout, self.pool,
                            sampling_ratio=self.sampling_ratio, aligned=self.aligned,
                            head_init_scale=self.head_init_scale, dtype=self.dtype)

    def tokens(self, video: jax.Array, deterministic: bool = True) -> jax.Array:
        """(B, T, H, W, C) -> normalised encoder tokens (B, N, D), what the head pools."""
        return self.encoder(video, None, deterministic)

    def __call__(self, video: jax.Array, boxes: jax.Array, deterministic: bool = True
                 ) -> jax.Array:
        grid = token_grid(video.shape, self.size)
        return self.head(self.tokens(video, deterministic), grid, boxes, self.size.patch,
                         deterministic)  # (B, M, K)
