"""AVA frame-mAP: per-class average precision of person-action boxes on keyframes at IoU 0.5, and
its mean, with the numbers of the official evaluator (activitynet/ActivityNet,
Evaluation/get_ava_performance.py, which scores with the TF object-detection API's
PascalDetectionEvaluator copied into Evaluation/ava/). Its "PascalBoxes_Precision/mAP@0.5IOU" is
`mAP` here and its "PascalBoxes_PerformanceByCategory/AP@0.5IOU/<name>" is `per_class[name]`.

Formats (CSV without a header; boxes normalised to [0, 1], not checked, as [x1, y1, x2, y2] =
[left, top, right, bottom]; timestamps in seconds):
  ground truth   video_id, timestamp, x1, y1, x2, y2, action_id, person_id
  detections     video_id, timestamp, x1, y1, x2, y2, action_id, score
  either         video_id, timestamp                (a keyframe listed, with no box)
  exclusions     video_id, timestamp
  label map      item { name: "bend/bow (at the waist)" id: 1 } ... (pbtxt; `label` blocks and
                 `label_id` as in AVA v2.2's file; other fields such as display_name, label_type
                 ignored; # comments; one field a line or several)
In memory (what read_csv returns and evaluate_frames takes), frames:
  {(video_id, timestamp): (boxes (N, 4) float64 [x1, y1, x2, y2], labels (N,) int, scores (N,)
  float64)}; a whole-second timestamp is an int (902), any other a float rounded to the
  microsecond; a keyframe with no entry has shape (0, 4), (0,), (0,) arrays.

The official rules, all followed here:
  - Rows (get_ava_performance.py read_csv): 2, 7 or 8 columns. The 8th is read as a float score
    (a detection's score; a ground-truth row's person_id, which only orders that keyframe's
    ground truth); 7 columns mean score 1.0; 2 columns list the keyframe with no box.
  - Keyframes (make_image_key): "%s,%.6f" % (video_id, Decimal(timestamp)), so "0902", "902"
    and "902.0" are one keyframe; the video id is taken as written (no stripping).
  - Label map (read_labelmap): the ids of `id:` or `label_id:` with the `name:` before them; ids
    start at 1 (object_detection_evaluation.py ObjectDetectionEvaluator: 'Classes should be
    1-indexed'). Rows of both files whose action_id is not in the label map are dropped before
    anything else; their keyframe still counts as listed.
  - Per-keyframe cap (read_csv, capacity=50 for detections, 0 = none for ground truth): the rows
    go through a min-heap of (score, action_id, y1, x1, y2, x2): pushed while the keyframe holds
    fewer than the cap, else the smallest tuple is replaced by a row whose score is strictly
    greater than its score; the kept rows are then stably sorted by descending score. That heap
    order decides ties: which of equal scores the cap keeps, and the order they are matched in.
  - Keyframes scored (get_ava_performance.py run_evaluation): with no exclusions, the official
    code since 2020 scores the keyframes the ground-truth file lists (rows of any kind) and
    ignores detections on any other keyframe. With exclusions, the official code of 2018-2019
    (commit 3fee089, with -e; SlowFast's copy): the ground truth and detections of excluded
    keyframes are dropped and every other detected keyframe is scored, so detections on a
    keyframe without ground truth are false positives; it keyed keyframes by "%04d" %
    int(timestamp), which reads whole seconds as here. `excluded=None` is the first, a set
    (possibly empty) the second.
  - Detection boxes with x2 <= x1 or y2 <= y1 are dropped after the cap (per_image_evaluation.py
    _remove_invalid_boxes; they still took a place under the cap). Zero-size ground-truth boxes
    count and are never matched; a ground-truth box with x2 < x1 or y2 < y1 makes the official
    code raise 'Invalid box data' (np_box_list.py BoxList) once a detection of its class is on
    its keyframe: here it is refused always.
  - IoU (np_box_ops.py iou): intersection (clipped at 0) / (area1 + area2 - intersection), area =
    (y2 - y1) * (x2 - x1), continuous coordinates (no +1); float64, the same operations in the
    same order, so each value is the official one to the bit.
  - Matching (per_image_evaluation.py _compute_tp_fp_for_single_class), per keyframe and class,
    detections in their keyframe's (descending score) order: the ground truth of the largest IoU
    (the first of equal ones, np.argmax) is matched if IoU >= 0.5 and it is not matched yet;
    otherwise the detection is a false positive, even when another ground truth qualifies.
    Nothing is difficult or group-of (run_evaluation passes groundtruth_difficult all False).
  - Per class, detections of the scored keyframes in detection-file order (a keyframe's place is
    that of its first kept row) are ranked by np.argsort(scores)[::-1] (metrics.py
    compute_precision_recall): the same call on the same array, so ties across keyframes are
    ranked as the official code ranks them with the same NumPy on the same kind of CPU (NumPy's
    default sort is not stable and SIMD on x86).
  - AP (metrics.py compute_average_precision): precision = TP / (TP + FP) and recall = TP / (ground
    truth of the class) after each ranked detection; recall 0 and 1 added at the ends with
    precision 0; precision made non-increasing from the right; AP = sum over the steps where
    recall changes of (recall step) * precision. A class with ground truth and no detection: 0.
  - Classes without ground truth (object_detection_evaluation.py ObjectDetectionEvaluation
    .evaluate): AP NaN, reported as NaN; mAP = np.nanmean over classes 1..max id, i.e. the mean
    over the label-map classes that have ground truth (NaN when none has).
Refused here where the official code takes or mangles them: malformed rows (the official asserts,
or under python -O reads them wrongly), non-finite numbers, negative timestamps, a label map
with duplicate ids or names or an item without a name, and inverted ground-truth boxes.
"""
from __future__ import annotations

import csv
import heapq
import math
import re

import numpy as np

DETECTION_CAPACITY = 50  # detections kept per keyframe (get_ava_performance.py run_evaluation)
IOU_THRESHOLD = 0.5

Key = tuple  # (video_id: str, timestamp: int | float seconds)
Frame = tuple  # (boxes (N, 4) [x1, y1, x2, y2], labels (N,), scores (N,))
# A kept row as the official heap holds it: (score, action_id, y1, x1, y2, x2).
_Entry = tuple


class AvaFormatError(ValueError):
    """A CSV, label map or frames dict not in the AVA format; the message says where (file and
    line, or keyframe) and what is expected."""


# ---- reading ------------------------------------------------------------------------------------
def keyframe_key(video_id: str, timestamp: str) -> Key:
    """(video_id, seconds) of a CSV row: the official "%.6f" rounding of the timestamp, an int
    when that is a whole second. Raises ValueError unless it is a finite number >= 0."""
    seconds = float(timestamp)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timestamp {timestamp!r} must be a finite number of seconds >= 0")
    rounded = float(f"{seconds:.6f}")
    return video_id, int(rounded) if rounded.is_integer() else rounded


def _finite(text: str, what: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} must be a finite number")
    return value


def _parse_row(row: list[str]) -> tuple[Key, _Entry | None]:
    """The keyframe of a CSV row and its entry (None for a 2-column row). ValueError on a bad
    row."""
    if len(row) not in (2, 7, 8):
        raise ValueError(f"expected 2 columns (video_id, timestamp), 7 or 8 (video_id, timestamp, "
                         f"x1, y1, x2, y2, action_id[, score or person_id]); got {len(row)}")
    key = keyframe_key(row[0], row[1])
    if len(row) == 2:
        return key, None
    x1, y1, x2, y2 = (_finite(v, name) for v, name in zip(row[2:6], ("x1", "y1", "x2", "y2")))
    try:
        action_id = int(row[6])
    except ValueError:
        raise ValueError(f"action_id {row[6]!r} must be an integer") from None
    score = _finite(row[7], "column 8 (score or person_id)") if len(row) == 8 else 1.0
    return key, (score, action_id, y1, x1, y2, x2)


def _keep(heap: list, entry: _Entry, capacity: int) -> None:
    """Add entry to a keyframe's heap under the official cap (module docstring; 0: no cap)."""
    if capacity == 0 or len(heap) < capacity:
        heapq.heappush(heap, entry)
    elif entry[0] > heap[0][0]:
        heapq.heapreplace(heap, entry)


def _frame(entries: list) -> Frame:
    """Arrays of a keyframe's kept entries, stably sorted by descending score."""
    entries = sorted(entries, key=lambda e: e[0], reverse=True)
    boxes = np.array([[x1, y1, x2, y2] for _, _, y1, x1, y2, x2 in entries],
                     dtype=np.float64).reshape(-1, 4)
    labels = np.array([e[1] for e in entries], dtype=np.int64)
    scores = np.array([e[0] for e in entries], dtype=np.float64)
    return boxes, labels, scores


def _rows(path: str):
    """(line number, row) of a CSV file; AvaFormatError when it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                yield reader.line_num, row
    except FileNotFoundError:
        raise AvaFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise AvaFormatError(f"{path}: cannot be read ({e.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise AvaFormatError(f"{path}: not a UTF-8 CSV file ({e})") from None


def read_csv(path: str, class_ids: set[int], capacity: int = 0) -> dict[Key, Frame]:
    """Frames of an AVA ground-truth or detections CSV (module docstring): rows of other classes
    dropped, at most `capacity` entries a keyframe kept by the official rule (0: all).

    Keyframes with entries come in the order of their first kept row (the order the official
    code scores them in), then those listed with none (2-column rows, other classes only).
    Raises AvaFormatError naming the file and line of a bad row."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0 (0: no cap); got {capacity}")
    heaps: dict[Key, list] = {}
    listed: dict[Key, None] = {}
    for line, row in _rows(path):
        try:
            key, entry = _parse_row(row)
        except ValueError as e:
            raise AvaFormatError(f"{path}:{line}: {e}") from None
        listed[key] = None
        if entry is not None and entry[1] in class_ids:
            _keep(heaps.setdefault(key, []), entry, capacity)
    frames = {key: _frame(heap) for key, heap in heaps.items()}
    frames.update((key, _frame([])) for key in listed if key not in frames)
    return frames


def read_exclusions(path: str) -> set[Key]:
    """Keyframes of an exclusions CSV (rows video_id, timestamp). AvaFormatError on a bad row."""
    excluded = set()
    for line, row in _rows(path):
        try:
            if len(row) != 2:
                raise ValueError(f"expected 2 columns (video_id, timestamp); got {len(row)}")
            excluded.add(keyframe_key(row[0], row[1]))
        except ValueError as e:
            raise AvaFormatError(f"{path}:{line}: {e}") from None
    return excluded


_TOKEN = re.compile(r"""(?P<space>\s+|\#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
                        |(?P<word>[A-Za-z_]\w*)|(?P<number>[-+]?\d+)|(?P<punct>[{}:])""", re.X)


def _tokens(text: str, path: str) -> list[tuple[str, str, int]]:
    """(kind, text, line) of the pbtxt's tokens; AvaFormatError on a character none starts."""
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise AvaFormatError(f"{path}:{line}: unexpected {text[pos]!r} in the label map")
        if m.lastgroup != "space":
            tokens.append((m.lastgroup, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return tokens


def _label_items(tokens: list, path: str) -> list[tuple[dict, int]]:
    """The fields {name: value text} of each top-level `item { ... }` / `label { ... }` block, with
    the block's line; AvaFormatError naming the line of anything else."""
    items, i = [], 0

    def kind() -> str | None:
        return tokens[i][0] if i < len(tokens) else None

    def text() -> str | None:
        return tokens[i][1] if i < len(tokens) else None

    def take(ok: bool, what: str) -> str:
        nonlocal i
        if not ok:
            found = repr(text()) if i < len(tokens) else "the end of the file"
            raise AvaFormatError(f"{path}:{tokens[min(i, len(tokens) - 1)][2]}: expected {what}, "
                                 f"found {found}")
        i += 1
        return tokens[i - 1][1]

    while i < len(tokens):
        start, fields = tokens[i][2], {}
        take(kind() == "word" and text() in ("item", "label"), "'item {' or 'label {'")
        take(kind() == "punct" and text() == "{", "'{'")
        while not (kind() == "punct" and text() == "}"):
            field = take(kind() == "word", "a field name or '}'")
            take(kind() == "punct" and text() == ":", f"':' after {field}")
            fields[field] = take(kind() in ("string", "number", "word"), f"a value for {field}")
        i += 1
        items.append((fields, start))
    return items


def read_labelmap(path: str) -> tuple[list[dict], set[int]]:
    """([{"id": int, "name": str}, ...] in file order, the set of ids) of an AVA label map
    (module docstring). Names are the text between the quotes, as written. Raises AvaFormatError
    naming the file and line of an item without a name or an integer id >= 1, a duplicate id or
    name, or a file with no item."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise AvaFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AvaFormatError(f"{path}: cannot be read as a UTF-8 label map ({e})") from None
    categories, lines = [], {}
    for fields, line in _label_items(_tokens(text, path), path):
        ids = [fields[k] for k in ("id", "label_id") if k in fields]
        name = fields.get("name", "")
        if len(ids) != 1 or not re.fullmatch(r"[-+]?\d+", ids[0]) or int(ids[0]) < 1:
            raise AvaFormatError(f"{path}:{line}: an item needs one integer id >= 1 (id: N or "
                                 f"label_id: N); got {ids or 'none'}")
        if name[:1] not in ("'", '"'):
            raise AvaFormatError(f'{path}:{line}: an item needs a quoted name (name: "...")')
        category = {"id": int(ids[0]), "name": name[1:-1]}
        for field in ("id", "name"):
            if (field, category[field]) in lines:
                raise AvaFormatError(f"{path}:{line}: {field} {category[field]!r} also at line "
                                     f"{lines[field, category[field]]}")
            lines[field, category[field]] = line
        categories.append(category)
    if not categories:
        raise AvaFormatError(f"{path}: no label map item (item {{ name: \"...\" id: N }})")
    return categories, {c["id"] for c in categories}


# ---- the metric ---------------------------------------------------------------------------------
def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of each [x1, y1, x2, y2] row of boxes1 (N, 4) with each of boxes2 (M, 4) -> (N, M)
    float64: the official np_box_ops.iou operations, so each value is its value to the bit."""
    heights = np.maximum(0.0, np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
                         - np.maximum(boxes1[:, None, 1], boxes2[None, :, 1]))
    widths = np.maximum(0.0, np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
                        - np.maximum(boxes1[:, None, 0], boxes2[None, :, 0]))
    intersection = heights * widths

    def area(b):
        return (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])

    return intersection / (area(boxes1)[:, None] + area(boxes2)[None, :] - intersection)


def match_detections(detections: np.ndarray, groundtruth: np.ndarray) -> np.ndarray:
    """True-positive flags (N,) of one keyframe's detections (N, 4) of one class, in descending
    score order, against that class's ground truth (M, 4), boxes [x1, y1, x2, y2]: each is
    matched to its largest-IoU ground truth (the first of equal ones) if IoU >= 0.5 and that one
    is not matched yet."""
    hits = np.zeros(len(detections), dtype=bool)
    if len(groundtruth) == 0:
        return hits
    iou = box_iou(detections, groundtruth)
    taken = np.zeros(len(groundtruth), dtype=bool)
    for i, j in enumerate(np.argmax(iou, axis=1)):
        if iou[i, j] >= IOU_THRESHOLD and not taken[j]:
            hits[i] = taken[j] = True
    return hits


def average_precision(scores: np.ndarray, hits: np.ndarray, num_groundtruth: int) -> float:
    """VOC AP (module docstring) of one class's detections: scores (N,), true-positive flags (N,),
    num_groundtruth > 0 boxes. Ranked by np.argsort(scores)[::-1], as the official code does."""
    if len(scores) == 0:
        return 0.0
    ranked = hits[np.argsort(scores)[::-1]]
    true_pos = np.cumsum(ranked)
    precision = true_pos / (true_pos + np.cumsum(~ranked))
    recall = np.concatenate([[0.0], true_pos / num_groundtruth, [1.0]])
    precision = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _checked(frame, key, what: str) -> Frame:
    """The frame's arrays (float64 boxes and scores, int labels), AvaFormatError unless their
    shapes agree and the numbers are finite (ground-truth boxes also with x1 <= x2, y1 <= y2)."""
    try:
        boxes, labels, scores = frame
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels).reshape(-1)
        labels = labels if labels.size else labels.astype(np.int64)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AvaFormatError(f"{what} keyframe {key}: expected (boxes (N, 4), labels (N,), scores "
                             f"(N,))") from None
    if not len(boxes) == len(labels) == len(scores) or not np.issubdtype(labels.dtype, np.integer):
        raise AvaFormatError(f"{what} keyframe {key}: {len(boxes)} boxes, {len(labels)} labels "
                             f"(dtype {labels.dtype}), {len(scores)} scores: need N of each, "
                             f"integer labels")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise AvaFormatError(f"{what} keyframe {key}: boxes and scores must be finite")
    if what == "ground truth":
        bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if len(bad):
            raise AvaFormatError(f"ground truth keyframe {key}: box {boxes[bad[0]].tolist()} "
                                 f"[x1, y1, x2, y2] has x2 < x1 or y2 < y1")
    return boxes, labels, scores


def _select(frame: Frame, keep: np.ndarray) -> Frame:
    return tuple(a[keep] for a in frame)


def _capped(frame: Frame, capacity: int | None) -> Frame:
    """A keyframe's detections in the official order: capped by the heap rule (module
    docstring), or with capacity None only stably sorted by descending score."""
    boxes, labels, scores = frame
    if capacity is None or len(np.unique(scores)) == len(scores):
        # Distinct scores: the heap keeps the `capacity` best, and the sort fixes their order.
        order = np.argsort(-scores, kind="stable")[:capacity or None]
        return _select(frame, order)
    heap: list = []
    for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
        _keep(heap, (score, label, y1, x1, y2, x2), capacity)
    return _frame(heap)


def _check_categories(categories: list[dict]) -> int:
    """The largest id of the categories; AvaFormatError unless there are some, with distinct ids
    >= 1 and distinct names."""
    ids, names = [c["id"] for c in categories], [c["name"] for c in categories]
    if not ids or min(ids) < 1:
        raise AvaFormatError(f"categories need ids >= 1 (the official 'Classes should be "
                             f"1-indexed'); got {ids}")
    if len(set(ids)) < len(ids) or len(set(names)) < len(names):
        raise AvaFormatError(f"categories need distinct ids and names; got {categories}")
    return max(ids)


def evaluate_frames(groundtruth: dict, detections: dict, categories: list[dict],
                    excluded: set | None = None,
                    capacity: int | None = DETECTION_CAPACITY) -> dict:
    """{"mAP": float, "per_class": {name: AP}} (NaN for classes without ground truth; classes in
    id order) of frames (module docstring) keyed (video_id, int or float seconds).

    categories: [{"id", "name"}] as read_labelmap returns; entries of other labels are dropped.
    excluded: None scores the keyframes of `groundtruth` only (the official since 2020); a set
      of keys drops those from both and scores every other detected keyframe (the official of
      2018-2019 with exclusions).
    capacity: detections kept per keyframe by the official cap (50), applied to the entries in
      the order given (as the official reads CSV rows); None: taken as they are (read_csv
      applied it), only stably sorted by descending score.
    Ground-truth entries are matched in the order given (read_csv's is the official one).
    Detections are scored in dict order, which decides the ranks of tied scores as in the
    official code (module docstring). Raises AvaFormatError on a malformed frame."""
    num_classes = _check_categories(categories)
    if capacity is not None and capacity < 0:
        raise ValueError(f"capacity must be None or >= 0 (0: no cap); got {capacity}")
    class_ids = np.array(sorted(c["id"] for c in categories))
    dropped = set() if excluded is None else excluded
    gt = {}
    for key, frame in groundtruth.items():
        if key not in dropped:
            frame = _checked(frame, key, "ground truth")
            gt[key] = _select(frame, np.isin(frame[1], class_ids))
    per_class = _detections_per_class(gt, detections, class_ids, excluded, capacity)
    counts = np.bincount(np.concatenate([f[1] for f in gt.values()] + [np.zeros(0, np.int64)]),
                         minlength=num_classes + 1)
    ap = np.full(num_classes, np.nan)
    for c in class_ids[counts[class_ids] > 0]:
        scores, hits = per_class.get(int(c), ([], []))
        ap[c - 1] = average_precision(np.concatenate([np.zeros(0)] + scores),
                                      np.concatenate([np.zeros(0, bool)] + hits), counts[c])
    mean = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
    return {"mAP": mean, "per_class": {c["name"]: float(ap[c["id"] - 1])
                                       for c in sorted(categories, key=lambda c: c["id"])}}


def _detections_per_class(gt: dict, detections: dict, class_ids: np.ndarray,
                          excluded: set | None, capacity: int | None) -> dict:
    """{class id: ([scores of each keyframe], [true-positive flags of each keyframe])} of the
    scored keyframes' detections, in dict order (evaluate_frames)."""
    per_class: dict = {}
    empty = (np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    for key, frame in detections.items():
        if (key not in gt) if excluded is None else (key in excluded):
            continue
        frame = _checked(frame, key, "detections")
        frame = _capped(_select(frame, np.isin(frame[1], class_ids)), capacity)
        boxes, labels, scores = _select(frame, (frame[0][:, 0] < frame[0][:, 2])
                                        & (frame[0][:, 1] < frame[0][:, 3]))
        gt_boxes, gt_labels, _ = gt.get(key, empty)
        for c in np.unique(labels):
            mine = labels == c
            lists = per_class.setdefault(int(c), ([], []))
            lists[0].append(scores[mine])
            lists[1].append(match_detections(boxes[mine], gt_boxes[gt_labels == c]))
    return per_class


def evaluate(groundtruth_csv: str, detections_csv: str, labelmap: str,
             exclusions: str | None = None) -> dict:
    """{"mAP": float, "per_class": {name: AP}} of AVA CSV files, the official evaluator's numbers
    (module docstring): classes of the label map, at most 50 detections a keyframe, keyframes of
    the exclusions CSV dropped. Raises AvaFormatError naming the file of a bad input."""
    categories, class_ids = read_labelmap(labelmap)
    groundtruth = read_csv(groundtruth_csv, class_ids)
    detections = read_csv(detections_csv, class_ids, DETECTION_CAPACITY)
    excluded = read_exclusions(exclusions) if exclusions else None
    try:
        return evaluate_frames(groundtruth, detections, categories, excluded, capacity=None)
    except AvaFormatError as e:
        raise AvaFormatError(f"{groundtruth_csv}: {e}") from None
