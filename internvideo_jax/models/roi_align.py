"""RoIAlign (Mask R-CNN), torchvision.ops.roi_align's arithmetic, as two contractions.

Coordinates: features (B, H, W, C) channel-last; a box is [x1, y1, x2, y2] in input pixels (the
frame the features were computed from); `spatial_scale` maps input pixels to feature cells (1/16
for a patch-16 ViT). Feature cell (h, w) holds the value at continuous position (y, x) = (h, w).

For one box, torchvision computes, per output bin (ph, pw) of an (oh, ow) grid:
  start = box * spatial_scale - offset, offset = 0.5 if aligned else 0
  roi_h = y2' - y1' (aligned=False: at least 1), bin_h = roi_h / oh (same along x)
  n_y = sampling_ratio if > 0 else ceil(roi_h / oh) sampling points per bin along y (same along x)
  y(ph, iy) = y1' + ph * bin_h + (iy + 0.5) * bin_h / n_y, iy < n_y
  out = sum over the n_y * n_x points of bilinear(y, x), divided by max(n_y * n_x, 1)
with torchvision's bilinear_interpolate edge rules: a point with y < -1, y > H, x < -1 or x > W
is 0; y <= 0 is read at 0; a point at y >= H - 1 reads row H - 1 only (same along x).

Every one of those rules acts on y and x separately, and the bilinear weight of cell (h, w) is
wy(h) * wx(w), so the average over a bin's grid of points factorises:
  out[ph, pw] = sum_{h, w} Ay[ph, h] Ax[pw, w] F[h, w],  Ay[ph, h] = mean_iy wy(y(ph, iy), h).
The (oh, H) and (ow, W) weights are built from the boxes with comparisons against the cell index
and contracted with the features in two einsums: static shapes (jit), differentiable in the
features (and piecewise in the boxes), no gather.

sampling_ratio <= 0 (adaptive, the reference AVA head's setting): n_y = ceil(roi_h / oh) differs
per box, but shapes must be static under jit, so up to `max_sampling_ratio` points per bin and
axis are computed and those past a box's own n_y are masked out. The default bound is
ceil(H / oh) along y and ceil(W / ow) along x: exact for every box no taller (wider) than the
frame, i.e. every box inside it. A box needing more points is sampled with the bound's count
(evenly spread over each bin, as torchvision would with that sampling ratio).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _axis_weights(start: jax.Array, end: jax.Array, bins: int, size: int, sampling_ratio: int,
                  max_samples: int, aligned: bool) -> jax.Array:
    """Per-bin averaged bilinear weights along one axis.

    Args:
      start, end: (B, M) box edges in feature coordinates (already scaled and offset).
      bins: output bins along this axis; size: feature cells along it.
    Returns:
      (B, M, bins, size) in start's dtype: row `bin` sums to the share of that bin's points that
      are valid.
    """
    dtype = start.dtype
    extent = end - start  # (B, M)
    if not aligned:
        extent = jnp.maximum(extent, 1.0)
    bin_size = extent / bins  # (B, M)
    if sampling_ratio > 0:
        samples = sampling_ratio
        count = jnp.full_like(extent, float(sampling_ratio))  # (B, M)
    else:
        samples = max_samples
        count = jnp.clip(jnp.ceil(extent / bins), 0.0, float(max_samples))  # (B, M), may be 0
    idx = jnp.arange(samples, dtype=dtype)  # (S,)
    bin_idx = jnp.arange(bins, dtype=dtype)  # (P,)
    pos = (start[..., None, None] + bin_idx[:, None] * bin_size[..., None, None]
           + (idx + 0.5) * (bin_size / jnp.maximum(count, 1.0))[..., None, None])  # (B, M, P, S)
    used = idx < count[..., None, None]  # (B, M, P, S): adaptive: only the box's own n points
    valid = used & (pos >= -1.0) & (pos <= size)
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, float(size - 1), low)
    frac = jnp.where(at_edge, 0.0, pos - low)  # (B, M, P, S)
    high = jnp.where(at_edge, low, low + 1.0)
    cells = jnp.arange(size, dtype=dtype)  # (size,)
    w = ((cells == low[..., None]) * (1.0 - frac[..., None])
         + (cells == high[..., None]) * frac[..., None])  # (B, M, P, S, size)
    w = jnp.where(valid[..., None], w, 0.0)
    return w.sum(axis=3) / jnp.maximum(count, 1.0)[..., None, None]  # (B, M, P, size)


def roi_align(features: jax.Array, boxes: jax.Array, output_size: int | tuple[int, int] = (7, 7),
              *, spatial_scale: float, sampling_ratio: int, aligned: bool = True,
              max_sampling_ratio: int | tuple[int, int] | None = None,
              precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
    """RoIAlign of M boxes per image, as torchvision.ops.roi_align (see the module docstring).

    Args:
      features: (B, H, W, C) feature map, channel-last.
      boxes: (B, M, 4) [x1, y1, x2, y2] in input pixels, box m of image b pooled from features[b].
        Every row is pooled: padding rows give some finite output, for the caller to mask.
      output_size: (oh, ow), or one int for both.
      spatial_scale: feature cells per input pixel (1 / patch for a ViT).
      sampling_ratio: points per bin and axis; <= 0: adaptive ceil(roi / output), bounded by
        max_sampling_ratio.
      aligned: True shifts the scaled box by -0.5 cell (pixel centers; torchvision's aligned=True);
        False is torchvision's default (and the AVA reference's), with rois at least 1 cell wide.
      max_sampling_ratio: static bound on the adaptive points per bin, (y, x) or one int; default
        (ceil(H / oh), ceil(W / ow)), exact for every box inside the frame. Unused when
        sampling_ratio > 0.
      precision: of the two contractions; HIGHEST keeps float32 interpolation on TPU/GPU too.
    Returns:
      (B, M, oh, ow, C) in the features' dtype; the weights are built in float32 (float64 for
      float64 features).
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, H, W, C), got shape {features.shape}.")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be (B, M, 4) [x1, y1, x2, y2] with B = {features.shape[0]} "
                         f"as the features, got shape {boxes.shape}.")
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if oh < 1 or ow < 1:
        raise ValueError(f"output_size must be positive, got {output_size}.")
    _, h, w, _ = features.shape
    if max_sampling_ratio is None:
        max_y, max_x = math.ceil(h / oh), math.ceil(w / ow)
    elif isinstance(max_sampling_ratio, int):
        max_y = max_x = max_sampling_ratio
    else:
        max_y, max_x = max_sampling_ratio
    if sampling_ratio <= 0 and min(max_y, max_x) < 1:
        raise ValueError(f"max_sampling_ratio must be at least 1, got {max_sampling_ratio}.")
    offset = 0.5 if aligned else 0.0
    dtype = features.dtype
    wdtype = jnp.promote_types(dtype, jnp.float32)
    b = boxes.astype(wdtype) * spatial_scale - offset  # (B, M, 4) in feature cells
    wy = _axis_weights(b[..., 1], b[..., 3], oh, h, sampling_ratio, max_y, aligned)  # (B, M, oh, H)
    wx = _axis_weights(b[..., 0], b[..., 2], ow, w, sampling_ratio, max_x, aligned)  # (B, M, ow, W)
    rows = jnp.einsum("bmph,bhwc->bmpwc", wy.astype(dtype), features,
                      precision=precision)  # (B, M, oh, W, C)
    return jnp.einsum("bmpwc,bmqw->bmpqc", rows, wx.astype(dtype),
                      precision=precision)  # (B, M, oh, ow, C)
