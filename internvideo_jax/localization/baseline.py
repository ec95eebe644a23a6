"""The baseline the localization head is measured against: sliding-window classification + NMS.

Windows of several lengths slide over a video's clip scores (the extracting classifier's softmax
per clip, stored with the features); a window's score for a class is the mean of its clips'
probabilities; every (window, class) above a threshold is a candidate segment, from the start of
its first clip's step to the end of its last (feature i spans steps i - 0.5 .. i + 0.5); class-wise
Soft-NMS keeps the best. No training: what a clip classifier alone says about where actions are.
"""
from __future__ import annotations

import numpy as np

from internvideo_jax.localization import data as loc_data
from internvideo_jax.localization import postprocess

WINDOWS = (4, 6, 8, 12, 16, 24)  # feature steps (the demo's actions last 7-22)


def window_candidates(scores: np.ndarray, windows=WINDOWS, threshold: float = 0.1
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, K) clip probabilities -> candidate (segments (M, 2) in feature steps, scores (M,),
    labels (M,)): every window of each length, slid by a quarter of its length."""
    n = len(scores)
    cumulative = np.concatenate([np.zeros((1, scores.shape[1])), np.cumsum(scores, 0)])  # (N+1, K)
    segs, vals, labels = [], [], []
    for w in windows:
        w = min(w, n)
        starts = np.arange(0, n - w + 1, max(1, w // 4))  # (S,)
        mean = (cumulative[starts + w] - cumulative[starts]) / w  # (S, K)
        s, c = np.nonzero(mean > threshold)
        segs.append(np.stack([starts[s] - 0.5, starts[s] + w - 0.5], 1))
        vals.append(mean[s, c])
        labels.append(c)
    return np.concatenate(segs), np.concatenate(vals), np.concatenate(labels)


def detect(example: dict, class_names: list[str], sigma: float = 0.5,
           max_segments: int = 200) -> list[dict]:
    """One video's ActivityNet results from its clip scores ('scores', 'times', 'duration' of
    localization/data.VideoSequences)."""
    segs, scores, labels = window_candidates(example["scores"])
    segs, scores, labels = postprocess.soft_nms(segs, scores, labels, sigma, 0.001, max_segments)
    seconds = np.clip(loc_data.seconds_from_steps(segs, example["times"]), 0,
                      example["duration"])
    return [{"segment": [float(a), float(b)], "label": class_names[int(c)], "score": float(p)}
            for (a, b), c, p in zip(seconds, labels, scores)]


def predictions(sequences: loc_data.VideoSequences, class_names: list[str]) -> dict:
    """ActivityNet results of every video of `sequences`; class_names: the classifier's, in the
    order of its scores."""
    return {"version": "sliding-window baseline",
            "results": {sequences.video_ids[i]: detect(sequences[i], class_names)
                        for i in range(len(sequences))}}
