"""Feature sequences with their ground truth: what the localization head trains and evaluates on.

Times: a packed clip-feature dataset (features.py) gives each feature its time in seconds (the
clip's centre). The head works in feature steps: position u of a sequence is the u-th feature,
and a time t maps to u by linear interpolation of the features' times (extrapolated with the
first/last interval outside them). At a constant rate this is ActionFormer's
u = (t * fps - clip_frames / 2) / clip_stride. With a fixed-length resize (ActivityNet-style sets:
every video's features linearly resized to `max_len`, align_corners=False) the resized feature j
sits at the original position (j + 0.5) * N / max_len - 0.5, and its time is interpolated there.

Training samples (SequenceSample): a random window of max_len features when a video is longer
(ActionFormer's truncation: a segment is kept, clipped to the window, when at least trunc_thresh
of it is inside; up to 10 draws for a window holding one), padded to max_len with mask False;
segments (max_segments, 2) in feature steps with labels and a validity mask.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from internvideo_jax.localization import features as clip_features


def steps_from_seconds(t: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Seconds -> feature steps of a sequence whose features lie at `times` (N,) seconds,
    increasing; linear between them and beyond the ends."""
    t = np.asarray(t, np.float64)
    times = np.asarray(times, np.float64)
    if len(times) == 1:
        return t - times[0]
    u = np.interp(t, times, np.arange(len(times), dtype=np.float64))
    first, last = times[1] - times[0], times[-1] - times[-2]
    u = np.where(t < times[0], (t - times[0]) / first, u)
    return np.where(t > times[-1], len(times) - 1 + (t - times[-1]) / last, u)


def seconds_from_steps(u: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Feature steps -> seconds: the inverse of steps_from_seconds."""
    u = np.asarray(u, np.float64)
    times = np.asarray(times, np.float64)
    n = len(times)
    if n == 1:
        return u + times[0]
    t = np.interp(u, np.arange(n, dtype=np.float64), times)
    t = np.where(u < 0, times[0] + u * (times[1] - times[0]), t)
    return np.where(u > n - 1, times[-1] + (u - (n - 1)) * (times[-1] - times[-2]), t)


def resize_sequence(feats: np.ndarray, times: np.ndarray, length: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) features at (N,) times -> (length, C) and (length,), linear interpolation with
    align_corners=False (as torch's F.interpolate(mode='linear'))."""
    n = len(feats)
    x = np.clip((np.arange(length) + 0.5) * n / length - 0.5, 0, n - 1)  # (L,) source positions
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (x - lo)[:, None]
    out = feats[lo] * (1 - w) + feats[hi] * w  # (L, C)
    return out.astype(np.float32), seconds_from_steps(x, times).astype(np.float32)


class VideoSequences:
    """A random-access source over the videos of one ground-truth subset that have features:
    [i] -> {'video_id', 'features' (N, C) float32, 'times' (N,) seconds, 'duration' seconds,
    'segments' (M, 2) seconds, 'labels' (M,) class indices, 'scores' (N, K) when extracted}.

    Videos of the subset without features are listed in `missing` (reported by the caller)."""

    def __init__(self, features_path: str, ground_truth: dict, subset: str,
                 class_names: list[str]):
        self.where, self.sources = clip_features.open_dataset(features_path)
        database = ground_truth["database"]
        index = {name: i for i, name in enumerate(class_names)}
        vids = sorted(v for v, e in database.items() if e["subset"] == subset)
        if not vids:
            subsets = sorted({e["subset"] for e in database.values()})
            raise ValueError(f"the ground truth has no videos in subset {subset!r} (it has "
                             f"{subsets}).")
        self.video_ids = [v for v in vids if v in self.where]
        self.missing = [v for v in vids if v not in self.where]
        if not self.video_ids:
            raise ValueError(f"none of the {len(vids)} videos of subset {subset!r} has features "
                             f"in {features_path} (e.g. {vids[:3]}; the dataset has e.g. "
                             f"{sorted(self.where)[:3]}): extract them, or check that the ids "
                             f"agree.")
        self.annotations = {
            v: (np.asarray([a["segment"] for a in database[v]["annotations"]],
                           np.float64).reshape(-1, 2),
                np.asarray([index[a["label"]] for a in database[v]["annotations"]], np.int32))
            for v in self.video_ids}
        self.durations = {v: float(database[v]["duration"]) for v in self.video_ids}

    def __len__(self) -> int:
        return len(self.video_ids)

    def describe(self, i: int) -> str:
        return self.video_ids[i]

    def __getitem__(self, i: int) -> dict:
        vid = self.video_ids[int(i)]
        split, j = self.where[vid]
        record = self.sources[split][j]
        segments, labels = self.annotations[vid]
        out = {"video_id": vid, "features": np.asarray(record["features"], np.float32),
               "times": np.asarray(record["times"], np.float32),
               "duration": self.durations[vid], "segments": segments, "labels": labels}
        if "scores" in record:
            out["scores"] = np.asarray(record["scores"], np.float32)
        return out


@dataclasses.dataclass(frozen=True)
class SequenceSample:
    """One video -> fixed-shape arrays for the head (a leading axis of 1: one view).

    Output: features (1, max_len, C) float32, mask (1, max_len) bool, segments (1, max_segments,
    2) float32 in feature steps, labels (1, max_segments) int32, segment_mask (1, max_segments)
    bool. train: random truncation of longer videos (with `resize` no truncation is needed).
    """

    max_len: int
    max_segments: int
    resize: bool = False
    trunc_thresh: float = 0.5
    train: bool = True

    def sequence(self, example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features (N', C), times (N',), segments (M, 2) in feature steps), resized when
        `resize`."""
        feats, times = example["features"], example["times"]
        if self.resize:
            feats, times = resize_sequence(feats, times, self.max_len)
        return feats, times, steps_from_seconds(example["segments"], times).reshape(-1, 2)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        feats, _, segments = self.sequence(example)
        labels = example["labels"]
        n = len(feats)
        if n > self.max_len:
            if not self.train:
                raise ValueError(f"{example['video_id']}: {n} features, more than max_len="
                                 f"{self.max_len} (evaluation pads whole videos instead).")
            feats, segments, labels = self._truncate(feats, segments, labels, rng)
        return self.pad(feats, segments, labels)

    def _truncate(self, feats, segments, labels, rng):
        """ActionFormer's truncate_feats: a random max_len window; keep segments at least
        trunc_thresh inside it, clipped and shifted; redraw (up to 10 times) for an empty one."""
        n = len(feats)
        for _ in range(10):
            start = int(rng.integers(0, n - self.max_len + 1))
            end = start + self.max_len
            s, e = np.maximum(segments[:, 0], start), np.minimum(segments[:, 1], end)
            inside = np.clip(e - s, 0, None) / np.maximum(segments[:, 1] - segments[:, 0], 1e-6)
            keep = inside >= self.trunc_thresh
            if keep.any():
                break
        window = np.stack([s[keep], e[keep]], axis=1) - start  # (M', 2)
        return feats[start:end], window, labels[keep]

    def pad(self, feats: np.ndarray, segments: np.ndarray, labels: np.ndarray,
            length: int | None = None) -> dict:
        """Zero-pad to `length` (default max_len) features and max_segments segments."""
        length = length or self.max_len
        if len(segments) > self.max_segments:
            raise ValueError(f"{len(segments)} segments in one video, more than "
                             f"model.max_segments={self.max_segments}: raise it.")
        out_feats = np.zeros((length, feats.shape[1]), np.float32)
        out_feats[:len(feats)] = feats
        mask = np.arange(length) < len(feats)
        seg = np.zeros((self.max_segments, 2), np.float32)
        seg[:len(segments)] = segments
        lab = np.zeros(self.max_segments, np.int32)
        lab[:len(labels)] = labels
        seg_mask = np.arange(self.max_segments) < len(segments)
        return {"features": out_feats[None], "mask": mask[None], "segments": seg[None],
                "labels": lab[None], "segment_mask": seg_mask[None]}
