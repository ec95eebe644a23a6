"""Temporal sampling: which frame indices of a video form a clip."""
from __future__ import annotations

import numpy as np


def dense_indices(video_frames: int, clip_len: int, stride: int,
                  rng: np.random.Generator) -> np.ndarray:
    """VideoMAE dense sampling: `clip_len` frames at an exact constant `stride` from a random start.

    The start is uniform over every position where the whole clip fits, so every index is
    start + stride * i (the reference's sampler can produce uneven strides; this one never does).
    Short videos (fewer than (clip_len - 1) * stride + 1 frames): the clip starts at frame 0 and
    indices past the end repeat the last frame ("clamp" padding).

    Returns:
      (clip_len,) int64 frame indices, non-decreasing.
    """
    if video_frames <= 0:
        raise ValueError(f"a video must have at least one frame, got {video_frames}")
    span = (clip_len - 1) * stride + 1
    start = int(rng.integers(0, video_frames - span + 1)) if video_frames >= span else 0
    return np.minimum(start + stride * np.arange(clip_len), video_frames - 1)
