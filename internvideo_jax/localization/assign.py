"""Points of the feature pyramid and their training targets (ActionFormer's label assignment).

All times are in feature steps of the input sequence (the grid the head's level 0 runs on).
A point is a row [t, range_lo, range_hi, stride]: its time, the regression range it answers for
and its level's stride. A point is assigned the ground-truth segment it lies in (near the centre
when centre sampling is on) whose longer end distance is within the point's regression range;
among several, the shortest segment; segments within 1e-3 of that length all give their class.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Segments whose length is within this many feature steps of the shortest candidate also give
# their class to the point (ActionFormer's min_len_mask, for near-duplicate annotations).
LENGTH_TIE_TOLERANCE = 1e-3


def feature_points(level_lengths: Sequence[int], strides: Sequence[int],
                   regression_ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Points of every pyramid level, levels concatenated (ActionFormer's generator, no offset).

    Args:
      level_lengths: number of points per level, each >= 1.
      strides: stride of each level in feature steps, each > 0.
      regression_ranges: (lo, hi) per level in feature steps, lo <= hi (hi may be inf).
    Returns:
      (P, 4) float32 rows [t, range_lo, range_hi, stride], t = i * stride for i < level length;
      P = sum(level_lengths).
    """
    if not len(level_lengths) == len(strides) == len(regression_ranges):
        raise ValueError(f"{len(level_lengths)} level lengths, {len(strides)} strides and "
                         f"{len(regression_ranges)} regression ranges: one of each per level")
    levels = []
    for length, stride, (lo, hi) in zip(level_lengths, strides, regression_ranges):
        if length < 1 or stride <= 0 or lo > hi:
            raise ValueError(f"level with length {length}, stride {stride}, range ({lo}, {hi}): "
                             "need length >= 1, stride > 0, lo <= hi")
        t = np.arange(length, dtype=np.float32) * np.float32(stride)  # (T_l,)
        level = np.empty((length, 4), np.float32)  # (T_l, 4)
        level[:, 0] = t
        level[:, 1:] = (lo, hi, stride)
        levels.append(level)
    return np.concatenate(levels, axis=0)


def _candidates(points: jax.Array, segments: jax.Array, valid: jax.Array,
                center_sample_radius: float, center_sample: bool
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Which (point, segment) pairs may be assigned, and the point-to-end distances.

    Args:
      points: (P, 4) float32 [t, range_lo, range_hi, stride].
      segments: (N, 2) float32 [start, end] in feature steps.
      valid: (N,) bool, False for padding.
    Returns:
      candidate (P, N) bool, left (P, N) and right (P, N) float32 distances t - start, end - t.
    """
    t, lo, hi, stride = (points[:, i, None] for i in range(4))  # each (P, 1)
    start, end = segments[None, :, 0], segments[None, :, 1]  # each (1, N)
    left = t - start  # (P, N)
    right = end - t  # (P, N)
    if center_sample:
        centre = 0.5 * (start + end)  # (1, N)
        t_min = jnp.maximum(centre - center_sample_radius * stride, start)  # (P, N)
        t_max = jnp.minimum(centre + center_sample_radius * stride, end)  # (P, N)
        inside = jnp.minimum(t - t_min, t_max - t) > 0  # (P, N)
    else:
        inside = jnp.minimum(left, right) > 0  # (P, N)
    longest = jnp.maximum(left, right)  # (P, N)
    in_range = (longest >= lo) & (longest <= hi)  # (P, N)
    return inside & in_range & valid[None, :], left, right


def assign_targets(points: jax.Array, segments: jax.Array, labels: jax.Array, valid: jax.Array,
                   num_classes: int, center_sample_radius: float = 1.5,
                   center_sample: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Classification and regression targets of every point for one video.

    Jittable with static shapes; vmap over a batch with points unbatched (in_axes None).

    Args:
      points: (P, 4) from feature_points.
      segments: (N, 2) [start, end] in feature steps, padded to a fixed N.
      labels: (N,) int class ids; those of valid segments in [0, num_classes).
      valid: (N,) bool, False for padding (never assigned).
      num_classes: K.
      center_sample_radius: with centre sampling, a point must lie within radius * stride of the
        segment centre (and strictly inside the segment).
      center_sample: False: any point strictly inside the segment.
    Returns:
      cls_targets (P, K) float32 multi-hot (all zero for negatives);
      reg_targets (P, 2) float32 (t - start, end - t) of the assigned segment divided by the
        point's stride (zero for negatives);
      positive (P,) bool, the points assigned a segment.
    """
    num_points, num_segments = points.shape[0], segments.shape[0]
    if points.shape != (num_points, 4):
        raise ValueError(f"points must be (P, 4), got {points.shape}")
    if segments.shape != (num_segments, 2) or labels.shape != (num_segments,) \
            or valid.shape != (num_segments,):
        raise ValueError(f"segments {segments.shape}, labels {labels.shape}, valid {valid.shape}: "
                         "need (N, 2), (N,), (N,)")
    if num_segments == 0:
        return (jnp.zeros((num_points, num_classes), jnp.float32),
                jnp.zeros((num_points, 2), jnp.float32), jnp.zeros((num_points,), bool))
    points = jnp.asarray(points, jnp.float32)
    segments = jnp.asarray(segments, jnp.float32)
    candidate, left, right = _candidates(points, segments, jnp.asarray(valid, bool),
                                         center_sample_radius, center_sample)  # each (P, N)

    lengths = jnp.where(candidate, segments[None, :, 1] - segments[None, :, 0], jnp.inf)  # (P, N)
    shortest = jnp.argmin(lengths, axis=1)  # (P,)
    min_length = jnp.take_along_axis(lengths, shortest[:, None], axis=1)  # (P, 1)
    tied = candidate & (lengths <= min_length + LENGTH_TIE_TOLERANCE)  # (P, N)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # (N, K)
    cls_targets = jnp.minimum(tied.astype(jnp.float32) @ one_hot, 1.0)  # (P, K)

    positive = candidate.any(axis=1)  # (P,)
    distances = jnp.stack([left, right], axis=-1)  # (P, N, 2)
    reg = jnp.take_along_axis(distances, shortest[:, None, None], axis=1)[:, 0]  # (P, 2)
    reg_targets = jnp.where(positive[:, None], reg / points[:, 3, None], 0.0)  # (P, 2)
    return cls_targets, reg_targets, positive
