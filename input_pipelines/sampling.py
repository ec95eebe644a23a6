"""Temporal sampling: which frame indices of a video form a clip."""
from __future__ import annotations

import numpy as np


SHORT_VIDEO_POLICIES = ("clamp", "loop", "stretch")


def dense_indices(video_frames: int, clip_len: int, stride: int, rng: np.random.Generator,
                  short_video: str = "clamp") -> np.ndarray:
    """VideoMAE dense sampling: `clip_len` frames at an exact constant `stride` from a random start.

    The start is uniform over every position where the whole clip fits, so every index is
    start + stride * i (the reference's sampler can produce uneven strides; this one never does).
    Videos shorter than the span (clip_len - 1) * stride + 1 follow `short_video`:
      clamp    start at 0, indices past the end repeat the last frame (default);
      loop     start at 0, indices wrap around to the beginning;
      stretch  clip_len indices spread evenly over the whole video (a smaller, uneven stride).

    Returns:
      (clip_len,) int64 frame indices.
    """
    if video_frames <= 0:
        raise ValueError(f"a video must have at least one frame, got {video_frames}")
    span = (clip_len - 1) * stride + 1
    if video_frames >= span:
        start = int(rng.integers(0, video_frames - span + 1))
        return start + stride * np.arange(clip_len)
    if short_video == "clamp":
        return np.minimum(stride * np.arange(clip_len), video_frames - 1)
    if short_video == "loop":
        return (stride * np.arange(clip_len)) % video_frames
    if short_video == "stretch":
        return np.linspace(0, video_frames - 1, clip_len).round().astype(np.int64)
    raise ValueError(f"unknown short_video policy {short_video!r}; choose one of "
                     f"{SHORT_VIDEO_POLICIES}")


def segment_indices(video_frames: int, num_segments: int, rng: np.random.Generator | None,
                    ) -> np.ndarray:
    """TSN segment sampling (UniFormerV2, Something-Something): one frame per equal segment.

    Segment i spans [round(i * L), round((i + 1) * L)] with L = (frames - 1) / num_segments; training
    (rng given) draws a frame uniformly in it (ends included, as the reference), testing (rng None)
    takes its middle (start + end) // 2.
    """
    seg = (video_frames - 1) / num_segments
    out = np.empty(num_segments, np.int64)
    for i in range(num_segments):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        out[i] = int(rng.integers(start, end + 1)) if rng is not None else (start + end) // 2
    return out


def uniform_indices(video_frames: int, num_frames: int) -> np.ndarray:
    """Multimodal (CLIP-style) sampling: np.linspace(0, frames - 1, num_frames), truncated to int."""
    return np.linspace(0, video_frames - 1, num_frames, dtype=np.int64)


def dense_test_views(video_frames: int, clip_len: int, stride: int,
                     num_clips: int) -> list[np.ndarray]:
    """Test-time temporal views: `num_clips` dense clips with evenly spaced starts.

    Starts are int(k * (frames - span) / (num_clips - 1)) for k = 0..num_clips-1 (a single clip is
    centred); indices past the end repeat the last frame, as in training.
    """
    span = (clip_len - 1) * stride + 1
    room = max(video_frames - span, 0)
    if num_clips == 1:
        starts = [room // 2]
    else:
        starts = [int(k * room / (num_clips - 1)) for k in range(num_clips)]
    return [np.minimum(s + stride * np.arange(clip_len), video_frames - 1) for s in starts]
