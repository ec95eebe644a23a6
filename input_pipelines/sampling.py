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


def frames_at_times(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The frame shown at each time: the last frame whose presentation time is <= t.

    times: (N,) ascending seconds of the frames (decode.Video.times); at: (K,) seconds.
    Times before the first frame give frame 0. A microsecond of slack keeps a frame whose time
    equals t up to float rounding.
    """
    idx = np.searchsorted(times, np.asarray(at, np.float64) + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(times) - 1).astype(np.int64)


def dense_time_indices(times: np.ndarray, clip_len: int, sample_fps: float,
                       rng: np.random.Generator, short_video: str = "clamp") -> np.ndarray:
    """Dense sampling by presentation time: `clip_len` frames 1 / sample_fps seconds apart.

    For variable frame rate files and datasets of mixed frame rates (V-JEPA and InternVideo2
    sample at a fixed fps): the clip starts at a frame drawn uniformly among those from which the
    whole span (clip_len - 1) / sample_fps fits, and frame k is the one shown at start + k /
    sample_fps. On a constant-rate video with sample_fps = fps / stride this is dense_indices.
    Shorter videos follow `short_video` (clamp: start at 0, the last frame repeats; loop: times
    wrap around the video's length; stretch: clip_len times spread over the whole video).

    Returns:
      (clip_len,) int64 frame indices.
    """
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    times = np.asarray(times, np.float64)
    offsets = np.arange(clip_len) / sample_fps  # (clip_len,) seconds after the start
    span = offsets[-1]
    fits = np.flatnonzero(times <= times[-1] - span + 1e-6)
    if len(fits):
        start = times[int(fits[int(rng.integers(len(fits)))])]
        return frames_at_times(times, start + offsets)
    if short_video == "clamp":
        return frames_at_times(times, offsets)
    if short_video == "loop":
        period = times[-1] + (times[-1] / (len(times) - 1) if len(times) > 1 else 1.0)
        return frames_at_times(times, offsets % period)
    if short_video == "stretch":
        return frames_at_times(times, np.linspace(0, times[-1], clip_len))
    raise ValueError(f"unknown short_video policy {short_video!r}; choose one of "
                     f"{SHORT_VIDEO_POLICIES}")


def dense_time_test_views(times: np.ndarray, clip_len: int, sample_fps: float,
                          num_clips: int) -> list[np.ndarray]:
    """dense_test_views by time: `num_clips` clips of frames 1 / sample_fps seconds apart whose
    starts are evenly spaced in time over the room the video leaves (one clip is centred)."""
    times = np.asarray(times, np.float64)
    offsets = np.arange(clip_len) / sample_fps
    room = max(times[-1] - offsets[-1], 0.0)
    starts = [room / 2] if num_clips == 1 else [k * room / (num_clips - 1)
                                                 for k in range(num_clips)]
    on_frames = times[frames_at_times(times, np.asarray(starts))]  # each clip starts on a frame
    return [frames_at_times(times, s + offsets) for s in on_frames]
