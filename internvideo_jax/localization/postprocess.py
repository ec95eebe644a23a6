"""Host-side inference post-processing of the localization head (NumPy), as ActionFormer's:
decode offsets to segments, keep the top-k (point, class) pairs of each pyramid level above a
score threshold, then Soft-NMS (or hard NMS) per class or class-agnostic.

Times are in feature steps, as in assign.py; converting to seconds is the caller's business.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NMS_METHODS = ("gaussian", "hard")


def decode_segments(points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Segments predicted at every point.

    Args:
      points: (P, 4) [t, range_lo, range_hi, stride] (assign.feature_points).
      offsets: (P, 2) non-negative (left, right) distances in units of the point's stride.
    Returns:
      (P, 2) float32 [t - left * stride, t + right * stride] in feature steps.
    """
    points = np.asarray(points, np.float32)
    offsets = np.asarray(offsets, np.float32)
    if points.ndim != 2 or points.shape[1] != 4 or offsets.shape != (points.shape[0], 2):
        raise ValueError(f"points {points.shape} and offsets {offsets.shape}: need (P, 4), (P, 2)")
    t, stride = points[:, 0], points[:, 3]  # (P,)
    return np.stack([t - offsets[:, 0] * stride, t + offsets[:, 1] * stride], axis=-1)


def _level_lengths_from_strides(strides: np.ndarray) -> list[int]:
    """Lengths of the runs of equal consecutive strides, i.e. of the concatenated levels.

    Args:
      strides: (P,) the points' stride column.
    Returns:
      level lengths, summing to P.
    """
    starts = np.concatenate([[0], np.flatnonzero(np.diff(strides) != 0) + 1, [strides.size]])
    return np.diff(starts).tolist()


def select_candidates(cls_probs: np.ndarray, offsets: np.ndarray, points: np.ndarray,
                      valid: np.ndarray, pre_nms_topk: int = 5000, score_threshold: float = 0.001,
                      min_duration: float = 0.05, level_lengths: Sequence[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate segments of one video before NMS (ActionFormer's inference_single_video).

    Per level: the (point, class) pairs of valid points with probability > score_threshold, the
    pre_nms_topk most probable of them (ties: lower point, then lower class first), decoded; then
    those of duration > min_duration (feature steps). Levels are concatenated in order.

    Args:
      cls_probs: (P, K) class probabilities (sigmoid of the logits).
      offsets: (P, 2) predicted (left, right) in stride units.
      points: (P, 4) from assign.feature_points.
      valid: (P,) bool, False for points over padding.
      pre_nms_topk: pairs kept per level, >= 1.
      score_threshold: a pair needs a probability strictly above it.
      min_duration: a segment needs a duration strictly above it, in feature steps.
      level_lengths: points per level; None: the runs of equal stride in points[:, 3] (pass it
        when two consecutive levels share a stride).
    Returns:
      segments (M, 2) float32 in feature steps, scores (M,) float32, labels (M,) int64.
    """
    cls_probs = np.asarray(cls_probs, np.float32)
    points = np.asarray(points, np.float32)
    valid = np.asarray(valid, bool)
    num_points, num_classes = cls_probs.shape
    if points.shape != (num_points, 4) or valid.shape != (num_points,):
        raise ValueError(f"cls_probs {cls_probs.shape}, points {points.shape}, valid "
                         f"{valid.shape}: need (P, K), (P, 4), (P,)")
    if pre_nms_topk < 1:
        raise ValueError(f"pre_nms_topk must be >= 1, got {pre_nms_topk}")
    lengths = (_level_lengths_from_strides(points[:, 3]) if level_lengths is None
               else list(level_lengths))
    if sum(lengths) != num_points:
        raise ValueError(f"level lengths {lengths} sum to {sum(lengths)}, not P = {num_points}")
    decoded = decode_segments(points, offsets)  # (P, 2)

    segments, scores, labels = [], [], []
    first = 0
    for length in lengths:
        probs = cls_probs[first:first + length].reshape(-1)  # (T_l * K,)
        keep = (probs > score_threshold) & np.repeat(valid[first:first + length], num_classes)
        pairs = np.flatnonzero(keep)  # (n,) flat (point, class) indices
        pairs = pairs[np.argsort(-probs[pairs], kind="stable")[:pre_nms_topk]]  # (k,)
        level_segments = decoded[first + pairs // num_classes]  # (k, 2)
        long_enough = level_segments[:, 1] - level_segments[:, 0] > min_duration  # (k,)
        segments.append(level_segments[long_enough])
        scores.append(probs[pairs][long_enough])
        labels.append((pairs % num_classes)[long_enough].astype(np.int64))
        first += length
    return np.concatenate(segments), np.concatenate(scores), np.concatenate(labels)


def segment_iou(segment: np.ndarray, others: np.ndarray) -> np.ndarray:
    """1-D IoU of one segment with many: intersection / union (0 where the union is empty).

    Args:
      segment: (2,) [start, end].
      others: (M, 2) [start, end].
    Returns:
      (M,) IoU.
    """
    intersection = np.maximum(
        0.0, np.minimum(segment[1], others[:, 1]) - np.maximum(segment[0], others[:, 0]))  # (M,)
    union = (segment[1] - segment[0]) + (others[:, 1] - others[:, 0]) - intersection  # (M,)
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def _suppress_group(segments: np.ndarray, scores: np.ndarray, method: str, sigma: float,
                    iou_threshold: float, min_score: float, max_keep: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (or hard NMS) within one group of segments.

    Repeatedly picks the highest-scoring live segment (ties: the lowest index), then rescales
    the other live ones by exp(-iou^2 / sigma) ("gaussian") or by 0 where iou >= iou_threshold
    ("hard"); segments below min_score die. Stops after max_keep picks (a later pick never
    outscores an earlier one, so the cap loses nothing of the overall top max_keep).

    Args:
      segments: (M, 2) float32.
      scores: (M,) float32.
    Returns:
      picked indices into the group (m,) int64, in pick order, and their rescaled scores (m,).
    """
    scores = scores.copy()
    alive = scores >= min_score  # (M,)
    picked = []
    while len(picked) < max_keep and alive.any():
        live = np.flatnonzero(alive)  # (L,)
        best = live[np.argmax(scores[live])]
        picked.append(best)
        alive[best] = False
        rest = live[live != best]  # (L - 1,)
        iou = segment_iou(segments[best], segments[rest])  # (L - 1,)
        if method == "gaussian":
            scores[rest] *= np.exp(-np.square(iou) / sigma)
        else:
            scores[rest] *= iou < iou_threshold  # 0 at or above the threshold
        alive[rest] = scores[rest] >= min_score
    picked = np.asarray(picked, np.int64)
    return picked, scores[picked]


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, sigma: float = 0.5,
             min_score: float = 0.001, max_segments: int = 200, class_agnostic: bool = False,
             method: str = "gaussian", iou_threshold: float = 0.1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft-NMS of one video's candidates, per class (or over all classes when class_agnostic).

    Args:
      segments: (M, 2) [start, end].
      scores: (M,) scores, e.g. from select_candidates.
      labels: (M,) int class ids.
      sigma: Gaussian width of the decay exp(-iou^2 / sigma), > 0 ("gaussian").
      min_score: segments whose (rescaled) score falls below it are dropped.
      max_segments: at most this many kept in total, >= 1.
      class_agnostic: False: a pick only rescales segments of its own class.
      method: "gaussian" (Soft-NMS) or "hard" (remove iou >= iou_threshold).
      iou_threshold: the suppression IoU of "hard"; unused by "gaussian".
    Returns:
      segments (m, 2) float32, rescaled scores (m,) float32, labels (m,), m <= max_segments,
      by descending score (a stable sort: ties stay in class-id order, then pick order).
    """
    if method not in NMS_METHODS:
        raise ValueError(f"method must be one of {NMS_METHODS}, got {method!r}")
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    segments = np.asarray(segments, np.float32)
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels)
    if segments.shape != (scores.size, 2) or scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"segments {segments.shape}, scores {scores.shape}, labels "
                         f"{labels.shape}: need (M, 2), (M,), (M,)")

    groups = ([np.arange(scores.size)] if class_agnostic
              else [np.flatnonzero(labels == c) for c in np.unique(labels)])
    kept, kept_scores = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for group in groups:
        picked, picked_scores = _suppress_group(segments[group], scores[group], method, sigma,
                                                iou_threshold, min_score, max_segments)
        kept.append(group[picked])
        kept_scores.append(picked_scores)
    kept, kept_scores = np.concatenate(kept), np.concatenate(kept_scores)  # (m',)
    order = np.argsort(-kept_scores, kind="stable")[:max_segments]  # (m,)
    return segments[kept[order]], kept_scores[order], labels[kept[order]]
