"""ActivityNet temporal action detection metric: average precision per class at tIoU thresholds,
their mean (mAP) and its mean over the thresholds, with the numbers of the official evaluator
(activitynet/ActivityNet, Evaluation/eval_detection.py: ANETdetection).

Formats (parsed JSON; times in seconds; a label is a string or an integer, compared as given):
  ground truth  {"database": {video_id: {"subset": str, "annotations": [{"segment": [start, end],
                "label": label}, ...], ...}, ...}, ...}
  predictions   {"results": {video_id: [{"segment": [start, end], "label": label,
                "score": number}, ...], ...}, ...}

The official rules, all followed here:
  - Ground truth: the videos whose "subset" is the one evaluated. The classes are the labels of
    their annotations, in order of first occurrence (database order, then annotation order); a
    label of another subset only is not a class.
  - Per class, the predictions of that label in file order (results order, then list order) are
    ranked by `scores.argsort()[::-1]`: the same call on the same array as the official code, so
    tied scores come out in its order. That order is NumPy's: its default sort is not stable and
    on x86 CPUs with AVX2 / AVX-512 runs a SIMD sort, so ties are ranked as the official code
    ranks them with the same NumPy on the same kind of CPU. (File order is Python 3's; the
    official code is Python 2, whose dicts iterate in hash order.)
  - Each prediction, in rank order and per threshold, walks the ground truth of its video and
    class in `tiou.argsort()[::-1]` order: a segment with tIoU < threshold ends the walk (false
    positive); one matched before at this threshold is skipped; the first other one is matched
    (true positive). A walk that ends without a match is a false positive, and so is a
    prediction on a video with no ground truth of its class (another subset's video, a video not
    in the database).
  - tIoU = intersection / (ground-truth length + predicted length - intersection), float64; a
    prediction matches at tIoU >= threshold. Two zero-length segments give 0/0 = NaN, which no
    `<` test rejects: the official code matches them at every threshold, and so does this one.
  - AP: precision and recall after each ranked prediction, VOC-interpolated (precision made
    non-increasing from the right, summed over the recall steps, recall 1 appended with
    precision 0); a class without predictions has AP 0. mAP: the mean over the subset's classes.
  - Blocked videos are left out of both files (the official code downloads that list; here it is
    given, empty by default).
Where the official code fails: a predicted label with no ground truth in the subset raises
KeyError there; here such predictions are left out and counted (`ignored`, `ignored_labels`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

import numpy as np

GROUND_TRUTH_FORMAT = ("a JSON object with a 'database' key mapping video ids to {'subset': str, "
                       "'annotations': [{'segment': [start, end], 'label': label}, ...]} "
                       "(the ActivityNet format)")
PREDICTIONS_FORMAT = ("a JSON object with a 'results' key mapping video ids to lists of "
                      "{'segment': [start, end], 'label': label, 'score': number} "
                      "(the ActivityNet detection format)")


class FormatError(ValueError):
    """A ground-truth, predictions or annotation file (or dict) not in the expected format; the
    message says where and what it must hold."""


# ---- reading and checking -----------------------------------------------------------------------
def load_json(path: str) -> dict:
    """The JSON object in the file at path. Raises FormatError when the file is missing,
    unreadable, not JSON, or holds something other than an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data


def is_number(x) -> bool:
    """Whether x is a finite int or float (a bool is not a number here)."""
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and math.isfinite(x))


def check_segment(segment, where: str) -> None:
    """Raise FormatError (naming `where`) unless segment is [start, end]: two finite numbers of
    seconds with start <= end."""
    if not (isinstance(segment, (list, tuple)) and len(segment) == 2
            and all(is_number(x) for x in segment)):
        raise FormatError(f"{where}: 'segment' must be [start, end], two numbers of seconds; "
                          f"got {segment!r}")
    if segment[1] < segment[0]:
        raise FormatError(f"{where}: segment {list(segment)} ends before it starts; write it as "
                          f"[start, end] with start <= end")


def check_label(label, where: str) -> None:
    """Raise FormatError (naming `where`) unless label is a string or an integer."""
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        raise FormatError(f"{where}: 'label' must be a string or an integer; got {label!r}")


def check_ground_truth(data, source: str = "ground truth") -> None:
    """Raise FormatError unless data is ActivityNet ground truth (module docstring): every video
    an object with a string 'subset' and a list of annotations, each with a segment and a label.
    Messages start with `source` and name the video."""
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise FormatError(f"{source}: must be {GROUND_TRUTH_FORMAT}; found {found}")
    for vid, video in data["database"].items():
        where = f"{source}: video {vid!r}"
        if not isinstance(video, dict):
            raise FormatError(f"{where}: must be an object with 'subset' and 'annotations'")
        if not isinstance(video.get("subset"), str):
            raise FormatError(f"{where}: needs a 'subset' string (e.g. 'validation')")
        if not isinstance(video.get("annotations"), list):
            raise FormatError(f"{where}: needs an 'annotations' list (empty if none)")
        for i, ann in enumerate(video["annotations"]):
            if not isinstance(ann, dict):
                raise FormatError(f"{where} annotation {i}: must be an object with 'segment' and "
                                  f"'label'")
            check_segment(ann.get("segment"), f"{where} annotation {i}")
            check_label(ann.get("label"), f"{where} annotation {i}")


def check_predictions(data, source: str = "predictions") -> None:
    """Raise FormatError unless data is ActivityNet detection results (module docstring): per
    video a list of {segment, label, score} with a finite numeric score. Messages start with
    `source` and name the video."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise FormatError(f"{source}: must be {PREDICTIONS_FORMAT}; found {found}")
    for vid, results in data["results"].items():
        where = f"{source}: video {vid!r}"
        if not isinstance(results, list):
            raise FormatError(f"{where}: must be a list of predictions")
        for i, r in enumerate(results):
            if not isinstance(r, dict):
                raise FormatError(f"{where} prediction {i}: must be an object with 'segment', "
                                  f"'label' and 'score'")
            check_segment(r.get("segment"), f"{where} prediction {i}")
            check_label(r.get("label"), f"{where} prediction {i}")
            if not is_number(r.get("score")):
                raise FormatError(f"{where} prediction {i}: 'score' must be a finite number; "
                                  f"got {r.get('score')!r}")


def parse_tious(text: str) -> list[float]:
    """tIoU thresholds from 'start:step:stop' (stop included when the steps reach it),
    'a,b,c' or one number, e.g. '0.3:0.1:0.7' -> [0.3, 0.4, 0.5, 0.6, 0.7]. The steps are taken
    in decimal, so each value is the float of its decimal: '0.5:0.05:0.95' gives 0.9 where the
    official default, np.linspace(0.5, 0.95, 10), has 0.8999999999999999 (one ulp apart: only a
    tIoU of exactly 0.8999999999999999 is counted differently).
    Raises ValueError unless the thresholds are in (0, 1] and differ in the first two decimals."""
    try:
        if ":" in text:
            start, step, stop = (Decimal(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values = [start + i * step for i in range(int((stop - start) / step) + 1)]
        else:
            values = [Decimal(x) for x in text.split(",")]
    except (InvalidOperation, ValueError):
        raise ValueError(f"tIoU thresholds {text!r}: expected 'start:step:stop' (step > 0, stop "
                         f">= start), a comma-separated list or one number") from None
    tious = [float(v) for v in values]
    _threshold_keys(tious)
    return tious


def _threshold_keys(tious: Sequence[float]) -> list[str]:
    """The metrics' keys f"{t:.2f}" of the thresholds; ValueError unless they are one or more
    values in (0, 1] with distinct keys."""
    keys = [f"{t:.2f}" for t in tious]
    if not keys or not all(0 < t <= 1 for t in tious) or len(set(keys)) != len(keys):
        raise ValueError(f"tIoU thresholds {list(tious)}: need one or more values in (0, 1] that "
                         f"differ in the first two decimals (they key the metrics as '0.50')")
    return keys


# ---- the metric ---------------------------------------------------------------------------------
def segment_iou(segments: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """tIoU of each [start, end] row of segments (M, 2) with each row of candidates (N, 2), in
    seconds -> (M, N) float64.

    Intersection clipped at 0, divided by (candidate length + segment length - intersection): the
    official operations in the official order, elementwise, so each value is the official one to
    the bit. Two zero-length segments give NaN (0/0), without a warning.
    """
    intersection = (np.minimum(segments[:, None, 1], candidates[None, :, 1])
                    - np.maximum(segments[:, None, 0], candidates[None, :, 0])).clip(0)
    union = ((candidates[None, :, 1] - candidates[None, :, 0])
             + (segments[:, None, 1] - segments[:, None, 0]) - intersection)
    with np.errstate(invalid="ignore"):
        return intersection / union


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC (2011) interpolated AP of (N,) precision and recall after each ranked prediction:
    precision 0 and recall 0 / 1 added at both ends, precision made non-increasing from the
    right, then sum over the recall steps of step width x precision."""
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _walks(truth: dict, videos: Sequence[str], segments: np.ndarray) -> list:
    """Per prediction (P,) in file order: the ground truth of its video in the order it is tried,
    `tiou.argsort()[::-1]`, as a list of (tIoU, ground-truth index); None for a video without.

    One (m, n) tIoU matrix per video; argsort along its rows runs the 1-D sort on each row, so
    each order is the official per-prediction one, ties included."""
    rows: dict = {}
    for p, vid in enumerate(videos):
        rows.setdefault(vid, []).append(p)
    walks = [None] * len(videos)
    for vid, ps in rows.items():
        if vid not in truth:
            continue
        index, truth_segments = truth[vid]
        tiou = segment_iou(segments[ps], truth_segments)
        order = tiou.argsort(axis=1)[:, ::-1]
        for p, overlaps, gts in zip(ps, np.take_along_axis(tiou, order, axis=1).tolist(),
                                    index[order].tolist()):
            walks[p] = list(zip(overlaps, gts))
    return walks


def class_average_precision(truth: dict, num_truth: int, videos: Sequence[str],
                            segments: np.ndarray, scores: np.ndarray,
                            tious: Sequence[float]) -> np.ndarray:
    """AP of one class at each threshold -> (T,) float64.

    truth: video id -> (indices (n,) int in 0..num_truth-1, segments (n, 2) seconds), the class's
    ground truth per video in database order. videos (P,), segments (P, 2), scores (P,): the
    class's predictions in file order. Matching as in the module docstring.
    """
    ap = np.zeros(len(tious))
    if len(scores) == 0:
        return ap
    walks = _walks(truth, videos, segments)
    order = scores.argsort()[::-1]
    tp = np.zeros((len(tious), len(order)))
    matched = [set() for _ in tious]  # per threshold: indices of ground truth already matched
    for rank, p in enumerate(order):
        if walks[p] is None:
            continue  # no ground truth of this class in the video: a false positive
        for t, threshold in enumerate(tious):
            for overlap, g in walks[p]:
                if overlap < threshold:
                    break
                if g not in matched[t]:
                    matched[t].add(g)
                    tp[t, rank] = 1
                    break
    tp_sum = np.cumsum(tp, axis=1)
    fp_sum = np.cumsum(1 - tp, axis=1)
    recall = tp_sum / num_truth
    precision = tp_sum / (tp_sum + fp_sum)
    for t in range(len(tious)):
        ap[t] = interpolated_average_precision(precision[t], recall[t])
    return ap




def _subset_truth(database: dict, subset: str, blocked: set) -> tuple[dict, int]:
    """The subset's ground truth per class: label -> (video id -> (indices, (n, 2) segments),
    count), labels in order of first occurrence; and the number of its videos."""
    per_class: dict = {}
    num_videos = 0
    for vid, video in database.items():
        if video["subset"] != subset or vid in blocked:
            continue
        num_videos += 1
        for ann in video["annotations"]:
            per_class.setdefault(ann["label"], []).append((vid, ann["segment"]))
    truth = {}
    for label, items in per_class.items():
        by_video: dict = {}
        for i, (vid, segment) in enumerate(items):
            by_video.setdefault(vid, []).append((i, segment))
        truth[label] = ({vid: (np.array([i for i, _ in rows]),
                               np.array([s for _, s in rows], dtype=np.float64).reshape(-1, 2))
                         for vid, rows in by_video.items()}, len(items))
    return truth, num_videos


def evaluate_detection(ground_truth: dict, predictions: dict, subset: str,
                       tious: Sequence[float], blocked: Iterable[str] = ()) -> dict:
    """ActivityNet detection metrics of predictions against ground_truth (formats and rules in
    the module docstring) on one subset at the given tIoU thresholds.

    blocked: video ids left out of both. Returns {"mAP": {"0.30": mAP, ...}, "average_mAP": the
    mean over thresholds, "per_class": {label: {"0.30": AP, ...}}, "ground_truth": {"videos",
    "instances", "classes"}, "predictions": {"counted", "ignored", "ignored_labels"}} (floats in
    [0, 1]; ignored: predictions whose label has no ground truth in the subset, labels in order
    of first occurrence). Raises FormatError for malformed inputs or a subset without
    annotations, ValueError for bad thresholds.
    """
    check_ground_truth(ground_truth)
    check_predictions(predictions)
    keys = _threshold_keys(tious)
    blocked = set(blocked)
    truth, num_videos = _subset_truth(ground_truth["database"], subset, blocked)
    if not truth:
        subsets = sorted({v["subset"] for vid, v in ground_truth["database"].items()
                          if v["annotations"] and vid not in blocked})
        raise FormatError(f"ground truth: no annotations in subset {subset!r}"
                          f"{' outside the blocked videos' if blocked else ''}; subsets with "
                          f"annotations: {subsets}")
    rows = {label: [] for label in truth}  # label -> indices of its predictions in `scores`
    videos, segments, scores, ignored = [], [], [], {}
    for vid, results in predictions["results"].items():
        if vid in blocked:
            continue
        for r in results:
            if r["label"] not in truth:
                ignored[r["label"]] = ignored.get(r["label"], 0) + 1
                continue
            rows[r["label"]].append(len(scores))
            videos.append(vid)
            segments.append(r["segment"])
            scores.append(r["score"])
    # NumPy infers the dtype the official DataFrame column gets (int64 if every score is an
    # integer, else float64); argsort's order of tied scores can depend on it.
    scores = np.asarray(scores)
    segments = np.array(segments, dtype=np.float64).reshape(-1, 2)
    ap = np.zeros((len(tious), len(truth)))
    for c, (label, (by_video, count)) in enumerate(truth.items()):
        p = np.array(rows[label], dtype=np.int64)
        ap[:, c] = class_average_precision(by_video, count, [videos[i] for i in p], segments[p],
                                           scores[p], tious)
    mean_ap = ap.mean(axis=1)
    return {
        "mAP": dict(zip(keys, mean_ap.tolist())),
        "average_mAP": float(mean_ap.mean()),
        "per_class": {label: dict(zip(keys, ap[:, c].tolist())) for c, label in enumerate(truth)},
        "ground_truth": {"videos": num_videos, "instances": sum(n for _, n in truth.values()),
                         "classes": len(truth)},
        "predictions": {"counted": len(scores), "ignored": sum(ignored.values()),
                        "ignored_labels": list(ignored)},
    }
