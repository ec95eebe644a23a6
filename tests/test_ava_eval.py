"""AVA frame-mAP (internvideo_jax/detection/ava_eval.py): hand-computed cases of the official
rules, a randomized comparison with a naive loop implementation written here from those rules, and
the `score` command end to end.

AP below is the official VOC interpolation: precision p_i and recall r_i after the i-th ranked
detection; AP = sum over the steps where recall grows of (r_i - r_{i-1}) * max_{j >= i} p_j, the
recall left after the last detection counting precision 0. Boxes are [x1, y1, x2, y2], normalised;
coordinates are multiples of 1/8 (or of 2^-10) so every IoU is exact in binary.
"""
import json
import math
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from internvideo_jax.detection.ava_eval import (DETECTION_CAPACITY, AvaFormatError, box_iou,
                                                evaluate, evaluate_frames, keyframe_key,
                                                read_csv, read_exclusions, read_labelmap)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A = [0.0, 0.0, 0.5, 1.0]     # left half
B = [0.5, 0.0, 1.0, 1.0]     # right half, no overlap with A
C = [0.25, 0.0, 0.75, 1.0]   # middle: IoU 1/3 with A and with B


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def labelmap(tmp_path, ids=(1, 2, 3)) -> str:
    return write(tmp_path / "map.pbtxt",
                 "".join(f'item {{\n  name: "class {i}"\n  id: {i}\n}}\n' for i in ids))


def csv_text(rows) -> str:
    return "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def score(tmp_path, gt_rows, det_rows, ids=(1, 2, 3), excluded_rows=None):
    """evaluate() on CSV files of rows: ground truth (video, t, box, action, person), detections
    (video, t, box, action, score), exclusions (video, t)."""
    gt = write(tmp_path / "gt.csv", csv_text(gt_rows))
    det = write(tmp_path / "det.csv", csv_text(det_rows))
    exc = None if excluded_rows is None else write(tmp_path / "exc.csv", csv_text(excluded_rows))
    return evaluate(gt, det, labelmap(tmp_path, ids), exc)


def gt_row(video, t, box, action, person=0):
    return [video, t, *box, action, person]


def det_row(video, t, box, action, s):
    return [video, t, *box, action, s]


# ---- reading --------------------------------------------------------------------------------
def test_keyframe_keys_follow_the_official_six_decimal_rounding():
    # make_image_key: "%s,%.6f" % (video_id, Decimal(timestamp)).
    assert keyframe_key("v", "0902") == keyframe_key("v", "902") == keyframe_key("v", "902.0")
    assert keyframe_key("v", "0902") == ("v", 902) and isinstance(keyframe_key("v", "902")[1], int)
    assert keyframe_key("v", "902.5") == ("v", 902.5)
    assert keyframe_key("v", "902.0000004") == ("v", 902)
    for bad in ("x", "nan", "-1"):
        with pytest.raises(ValueError):
            keyframe_key("v", bad)


def test_labelmap_formats(tmp_path):
    v21 = ('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
           'item {\n  name: "crouch"\n  id: 3\n}\n')
    v22 = ('# AVA v2.2\nlabel {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
           '  label_type: PERSON_MOVEMENT\n}\nlabel { name: "crouch" label_id: 3 }\n')
    shown = 'item { name: "bend/bow (at the waist)" id: 1 display_name: "Bend" }\n' \
            "item { id: 3 name: 'crouch' }\n"
    want = ([{"id": 1, "name": "bend/bow (at the waist)"}, {"id": 3, "name": "crouch"}], {1, 3})
    for i, text in enumerate((v21, v22, shown)):
        assert read_labelmap(write(tmp_path / f"m{i}.pbtxt", text)) == want


@pytest.mark.parametrize("text, message", [
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 1\n}\n',
     ":5: id 1 also at line 1"),
    ('item { name: "a" id: 1 }\nitem { name: "a" id: 2 }\n', ":2: name 'a' also at line 1"),
    ('item { id: 1 }\n', ":1: an item needs a quoted name"),
    ('item { name: "a" id: 0 }\n', ":1: an item needs one integer id >= 1"),
    ('item { name: "a" }\n', ":1: an item needs one integer id >= 1"),
    ('item { name: "a" id: 1 \n', ":1: expected a field name or '}', found the end of the file"),
    ('items { name: "a" id: 1 }\n', ":1: expected 'item {' or 'label {', found 'items'"),
    ('item {\n  name: "a"\n  id: 1.5\n}\n', ":3: unexpected '.'"),
    ("# nothing\n", "no label map item"),
])
def test_labelmap_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(AvaFormatError, match=re.escape(message)):
        read_labelmap(write(tmp_path / "map.pbtxt", text))


def test_read_csv_orders_sorts_and_lists_keyframes(tmp_path):
    # v,903 has only a class-9 row (not in the map) and v,904 is a 2-column row: both listed with
    # no entry, after the keyframes with entries. The 8th column orders by descending value.
    path = write(tmp_path / "gt.csv", csv_text([
        ["v", "0903", *A, 9, 5], ["w", "902", *A, 1, 0], ["v", "902.0", *B, 2, 1],
        ["v", "0902", *A, 1, 3], ["v", 904]]))
    frames = read_csv(path, {1, 2})
    assert list(frames) == [("w", 902), ("v", 902), ("v", 903), ("v", 904)]
    boxes, labels, scores = frames["v", 902]
    assert boxes.tolist() == [A, B] and labels.tolist() == [1, 2] and scores.tolist() == [3, 1]
    assert all(len(a) == 0 for a in frames["v", 903]) and frames["v", 904][0].shape == (0, 4)
    assert frames["w", 902][2].tolist() == [0.0]


def test_read_csv_cap_keeps_rows_by_the_official_heap_rule(tmp_path):
    # Min-heap of (score, action_id, y1, x1, y2, x2), capacity 2. A row replaces the smallest
    # tuple only when its score is strictly greater than that tuple's score:
    #  - three rows tied at 0.5 (actions 1, 2, 3 in file order): the third is not kept;
    #  - then a 0.7 row replaces the smallest tuple, (0.5, action 1, ...), not the first row kept
    #    by a stable sort, so actions 2 and the 0.7 one remain.
    rows = [["v", 902, *A, a, 0.5] for a in (1, 2, 3)]
    tied = read_csv(write(tmp_path / "a.csv", csv_text(rows)), {1, 2, 3}, capacity=2)
    assert tied["v", 902][1].tolist() == [1, 2]
    kept = read_csv(write(tmp_path / "b.csv", csv_text(rows + [["v", 902, *A, 1, 0.7]])),
                    {1, 2, 3}, capacity=2)
    assert kept["v", 902][1].tolist() == [1, 2] and kept["v", 902][2].tolist() == [0.7, 0.5]
    ordered = read_csv(write(tmp_path / "c.csv", csv_text(
        [["v", 902, *A, 2, 0.5], ["v", 902, *A, 1, 0.5], ["v", 902, *A, 3, 0.7]])), {1, 2, 3},
        capacity=2)
    assert ordered["v", 902][1].tolist() == [3, 2]


@pytest.mark.parametrize("row, message", [
    ("v,902,0.1,0.1,0.5", "expected 2 columns .* got 5"),
    ("v,902,0.1,0.1,0.5,0.5,x,0.9", "action_id 'x' must be an integer"),
    ("v,902,0.1,zero,0.5,0.5,1,0.9", "could not convert string to float: 'zero'"),
    ("v,902,0.1,0.1,0.5,0.5,1,nan", r"column 8 \(score or person_id\) 'nan' must be a finite"),
    ("v,-3,0.1,0.1,0.5,0.5,1,0.9", "timestamp '-3' must be a finite number of seconds >= 0"),
    ("", "expected 2 columns .* got 0"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "det.csv", f"v,902,0.1,0.1,0.5,0.5,1,0.9\n{row}\n")
    with pytest.raises(AvaFormatError, match=f"det.csv:2: {message}"):
        read_csv(path, {1})


def test_exclusions_are_two_columns(tmp_path):
    assert read_exclusions(write(tmp_path / "e.csv", "v,0902\nw,903.0\n")) == {("v", 902),
                                                                            ("w", 903)}
    with pytest.raises(AvaFormatError, match="e2.csv:1: expected 2 columns"):
        read_exclusions(write(tmp_path / "e2.csv", "v,0902,1\n"))


# ---- matching and AP --------------------------------------------------------------------------
def test_duplicate_detection_of_one_box_is_a_false_positive(tmp_path):
    # Ground truth A and B. Ranked: A 0.9 TP; A again 0.8: A is taken, B has IoU 0 -> FP;
    # B 0.7 TP. p = 1, 1/2, 2/3; r = 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    r = score(tmp_path, [gt_row("v", 902, A, 1, 0), gt_row("v", 902, B, 1, 1)],
              [det_row("v", 902, A, 1, 0.9), det_row("v", 902, A, 1, 0.8),
               det_row("v", 902, B, 1, 0.7)], ids=(1,))
    assert r["mAP"] == pytest.approx(5 / 6, abs=1e-15)


@pytest.mark.parametrize("persons, want", [((1, 0), 0.5), ((0, 1), 1.0)])
def test_a_detection_whose_best_ground_truth_is_taken_is_a_false_positive(tmp_path, persons,
                                                                          want):
    # Ground truth A and C' = [0.25, 0, 0.75, 1]; detections A (0.9) and D = [0.125, 0, 0.625, 1]
    # (0.8). D has IoU 0.375 / 0.625 = 0.6 with both, so np.argmax picks the first in the
    # keyframe's ground-truth order, which is by descending person_id (the 8th column):
    #  - A first (person 1 > 0): D's pick A is taken by the first detection -> FP although C'
    #    qualifies: p = 1, 1/2; r = 1/2, 1/2 -> AP = 1/2;
    #  - C' first: D matches C' -> AP = 1.
    d = [0.125, 0.0, 0.625, 1.0]
    assert box_iou(np.array([d]), np.array([A, C]))[0].tolist() == [0.6, 0.6]
    r = score(tmp_path, [gt_row("v", 902, A, 1, persons[0]), gt_row("v", 902, C, 1, persons[1])],
              [det_row("v", 902, A, 1, 0.9), det_row("v", 902, d, 1, 0.8)], ids=(1,))
    assert r["mAP"] == want


def test_iou_exactly_one_half_matches(tmp_path):
    # [0, 0, 1/4, 1] inside A: intersection 1/4, union 1/2 + 1/4 - 1/4 = 1/2 -> IoU 0.5 exactly.
    # 2^-10 narrower: IoU (1/4 - 2^-10) / (1/2) = 0.498046875 < 0.5 -> FP, AP 0.
    half, under = [0.0, 0.0, 0.25, 1.0], [0.0, 0.0, 0.25 - 2 ** -10, 1.0]
    assert box_iou(np.array([half, under]), np.array([A]))[:, 0].tolist() == [0.5, 0.498046875]
    assert score(tmp_path, [gt_row("v", 902, A, 1)], [det_row("v", 902, half, 1, 0.9)],
                 ids=(1,))["mAP"] == 1.0
    assert score(tmp_path, [gt_row("v", 902, A, 1)], [det_row("v", 902, under, 1, 0.9)],
                 ids=(1,))["mAP"] == 0.0


def test_a_class_without_ground_truth_is_nan_and_left_out_of_the_mean(tmp_path):
    # Class 1: AP 1. Class 2: detections, no ground truth -> NaN. Class 3: ground truth, no
    # detection -> AP 0. mAP = mean(1, 0) = 1/2 (np.nanmean over classes 1..3).
    r = score(tmp_path, [gt_row("v", 902, A, 1), gt_row("v", 902, B, 3)],
              [det_row("v", 902, A, 1, 0.9), det_row("v", 902, B, 2, 0.8)])
    assert r["per_class"]["class 1"] == 1.0 and r["per_class"]["class 3"] == 0.0
    assert math.isnan(r["per_class"]["class 2"]) and r["mAP"] == 0.5
    assert list(r["per_class"]) == ["class 1", "class 2", "class 3"]
    # No class has ground truth: mAP NaN too.
    r = score(tmp_path, [["v", 902]], [det_row("v", 902, A, 1, 0.9)])
    assert math.isnan(r["mAP"]) and all(math.isnan(v) for v in r["per_class"].values())


def test_labels_outside_the_label_map_are_dropped_before_the_cap(tmp_path):
    # 60 class-9 detections (not in the map) score above the only class-1 detection, a TP: they
    # are dropped before the 50-per-keyframe cap, so the TP is kept -> AP 1 (and no class 9).
    dets = [det_row("v", 902, B, 9, 0.9) for _ in range(60)] + [det_row("v", 902, A, 1, 0.1)]
    r = score(tmp_path, [gt_row("v", 902, A, 1), gt_row("v", 902, B, 9)], dets)
    assert r["per_class"]["class 1"] == 1.0 and r["mAP"] == 1.0 and "class 9" not in r["per_class"]


def test_the_cap_keeps_the_50_best_detections_of_a_keyframe(tmp_path):
    # 50 FPs (box B, scores 0.5 + i/100) outrank the TP (A, 0.1), the 51st: it is cut -> AP 0.
    # In memory without a cap (capacity=0) the TP ranks 51st: p = 1/51, r = 1 -> AP = 1/51.
    assert DETECTION_CAPACITY == 50
    dets = [det_row("v", 902, B, 1, 0.5 + i / 100) for i in range(50)]
    dets.append(det_row("v", 902, A, 1, 0.1))
    assert score(tmp_path, [gt_row("v", 902, A, 1)], dets, ids=(1,))["mAP"] == 0.0
    frames = read_csv(str(tmp_path / "det.csv"), {1})
    gt = {("v", 902): (np.array([A]), np.array([1]), np.array([0.0]))}
    categories = [{"id": 1, "name": "a"}]
    assert evaluate_frames(gt, frames, categories)["mAP"] == 0.0
    assert evaluate_frames(gt, frames, categories, capacity=0)["mAP"] == pytest.approx(1 / 51)


def test_invalid_detection_boxes_are_dropped_and_zero_size_ground_truth_counts(tmp_path):
    # A detection with x2 < x1 (0.9) and one with zero height (0.85) are dropped, not FPs; the
    # exact A (0.8) is a TP. Ground truth A and a zero-width box that nothing can match:
    # p = 1, r = 1/2 -> AP = 1/2 (with the invalid boxes as FPs it would be 1/6).
    flipped, flat, thin = [0.5, 0.0, 0.0, 1.0], [0.0, 0.5, 0.5, 0.5], [0.75, 0.0, 0.75, 1.0]
    r = score(tmp_path, [gt_row("v", 902, A, 1), gt_row("v", 902, thin, 1, 1)],
              [det_row("v", 902, flipped, 1, 0.9), det_row("v", 902, flat, 1, 0.85),
               det_row("v", 902, A, 1, 0.8), det_row("v", 902, thin, 1, 0.7)], ids=(1,))
    assert r["mAP"] == 0.5


def test_an_inverted_ground_truth_box_is_refused(tmp_path):
    with pytest.raises(AvaFormatError, match=r"gt.csv: ground truth keyframe \('v', 902\): box "
                                             r"\[0.5, 0.0, 0.0, 1.0\]"):
        score(tmp_path, [gt_row("v", 902, [0.5, 0.0, 0.0, 1.0], 1)], [], ids=(1,))


def test_several_videos_and_keyframes(tmp_path):
    # Class 1: ground truth A on a/902 and on b/902 ("0902" and "902" are one keyframe).
    #   Ranked: a/902 A 0.9 TP; b/903 A 0.8 FP (b/903 has class-2 ground truth only);
    #   b/902 A 0.7 TP. p = 1, 1/2, 2/3; r = 1/2, 1/2, 1 -> AP = 5/6.
    # Class 2: ground truth B on b/903. Ranked: a/902 B 0.95 FP; b/903 B 0.6 TP.
    #   p = 0, 1/2; r = 0, 1 -> AP = 1/2.  mAP = (5/6 + 1/2) / 2 = 2/3.
    r = score(tmp_path,
              [gt_row("a", "0902", A, 1), gt_row("b", "902", A, 1), gt_row("b", 903, B, 2)],
              [det_row("a", 902, A, 1, 0.9), det_row("b", "0903", A, 1, 0.8),
               det_row("b", "0902", A, 1, 0.7), det_row("a", 902, B, 2, 0.95),
               det_row("b", 903, B, 2, 0.6)], ids=(1, 2))
    assert r["per_class"]["class 1"] == pytest.approx(5 / 6, abs=1e-15)
    assert r["per_class"]["class 2"] == 0.5
    assert r["mAP"] == pytest.approx(2 / 3, abs=1e-15)


def test_keyframes_scored_with_and_without_exclusions(tmp_path):
    # Ground truth A on v/902 and v/903; v/905 listed with no box (2-column row).
    # Detections: A on v/902 (0.5, TP), a miss on v/903 (B, 0.9), A on v/904 (0.95; v/904 is not
    # in the ground truth), A on v/905 (0.92).
    gt = [gt_row("v", 902, A, 1), gt_row("v", 903, A, 1), ["v", 905]]
    dets = [det_row("v", 902, A, 1, 0.5), det_row("v", 903, B, 1, 0.9),
            det_row("v", 904, A, 1, 0.95), det_row("v", 905, A, 1, 0.92)]
    # No exclusions (official since 2020): the ground truth's keyframes 902, 903, 905 are
    # scored, 904 ignored. Ranked: 905 FP, 903 FP, 902 TP; p = 0, 0, 1/3; r = 0, 0, 1/2
    # -> AP = 1/2 * 1/3 = 1/6.
    assert score(tmp_path, gt, dets, ids=(1,))["mAP"] == pytest.approx(1 / 6, abs=1e-15)
    # Exclusions {903} (official 2018-2019): 903's ground truth and detection are dropped and
    # every other detected keyframe counts: 904 FP, 905 FP, 902 TP; r = 0, 0, 1 -> AP = 1/3.
    r = score(tmp_path, gt, dets, ids=(1,), excluded_rows=[["v", "0903"]])
    assert r["mAP"] == pytest.approx(1 / 3, abs=1e-15)
    # Excluding 904 and 905 too leaves 902 alone -> AP 1.
    r = score(tmp_path, gt, dets, ids=(1,), excluded_rows=[["v", 903], ["v", 904], ["v", 905]])
    assert r["mAP"] == 1.0


def test_tied_scores_are_ranked_as_the_official_argsort_ranks_them():
    # A TP on v/902 and an FP on v/903, both 0.5, then a TP on v/904 at 0.4. The official rank
    # is np.argsort(scores)[::-1] over the class's detections in keyframe order:
    #   FP first: p = 0, 1/2, 2/3; r = 0, 1/2, 1 -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    #   TP first: p = 1, 1/2, 2/3; r = 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    first = int(np.argsort(np.array([0.5, 0.5, 0.4]))[::-1][0])  # position 0 or 1 ranks first
    gt = {("v", t): (np.array([A]), np.array([1]), np.array([0.0])) for t in (902, 904)}
    gt["v", 903] = (np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
    for order in ([902, 903], [903, 902]):
        det = {("v", t): (np.array([A]), np.array([1]), np.array([0.5])) for t in order}
        det["v", 904] = (np.array([A]), np.array([1]), np.array([0.4]))
        ap = evaluate_frames(gt, det, [{"id": 1, "name": "a"}])["mAP"]
        assert ap == pytest.approx(5 / 6 if order[first] == 902 else 2 / 3, abs=1e-15)


def test_malformed_frames_are_refused():
    cats = [{"id": 1, "name": "a"}]
    good = {("v", 902): (np.array([A]), np.array([1]), np.array([1.0]))}
    for bad in ((np.array([A]), np.array([1, 1]), np.array([1.0])),
                (np.array([A]), np.array([1.5]), np.array([1.0])),
                (np.array([A]), np.array([1]), np.array([np.nan]))):
        with pytest.raises(AvaFormatError, match=r"detections keyframe \('v', 902\)"):
            evaluate_frames(good, {("v", 902): bad}, cats)
    with pytest.raises(AvaFormatError, match="1-indexed"):
        evaluate_frames(good, good, [{"id": 0, "name": "a"}])
    with pytest.raises(AvaFormatError, match="distinct ids and names"):
        evaluate_frames(good, good, [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}])


# ---- randomized comparison with a naive implementation -------------------------------------
def naive_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def naive_map(gt, det, ids, excluded):
    """The rules in loops: keyframes scored, labels filtered, 50 best a keyframe, invalid boxes
    dropped, greedy matching by score, VOC AP over classes with ground truth."""
    gt = {k: [(list(b), int(l)) for b, l in zip(f[0], f[1]) if l in ids]
          for k, f in gt.items() if excluded is None or k not in excluded}
    ranked = {c: [] for c in ids}
    for k, (boxes, labels, scores) in det.items():
        if (k not in gt) if excluded is None else (k in excluded):
            continue
        entries = sorted(((float(s), list(b), int(l)) for b, l, s in zip(boxes, labels, scores)
                          if l in ids), key=lambda e: -e[0])[:50]
        entries = [e for e in entries if e[1][0] < e[1][2] and e[1][1] < e[1][3]]
        for c in ids:
            truth = [b for b, l in gt.get(k, []) if l == c]
            taken = [False] * len(truth)
            for s, b, l in (e for e in entries if e[2] == c):
                ious = [naive_iou(b, t) for t in truth]
                j = ious.index(max(ious)) if ious else None
                hit = j is not None and ious[j] >= 0.5 and not taken[j]
                if hit:
                    taken[j] = True
                ranked[c].append((s, hit))
    aps = {}
    for c in ids:
        n = sum(l == c for f in gt.values() for _, l in f)
        if n == 0:
            aps[c] = math.nan
            continue
        hits = [h for _, h in sorted(ranked[c], key=lambda e: -e[0])]
        tp = [sum(hits[:i + 1]) for i in range(len(hits))]
        precision = [t / (i + 1) for i, t in enumerate(tp)]
        recall = [t / n for t in tp]
        ap, previous = 0.0, 0.0
        for i, r in enumerate(recall):
            if r > previous:
                ap += (r - previous) * max(precision[i:])
                previous = r
        aps[c] = ap
    finite = [v for v in aps.values() if not math.isnan(v)]
    return (sum(finite) / len(finite) if finite else math.nan), aps


def random_box(rng, near=None):
    if near is not None:
        return [v + rng.uniform(-0.08, 0.08) for v in near]
    x1, x2 = sorted(rng.random() for _ in range(2))
    y1, y2 = sorted(rng.random() for _ in range(2))
    return [x1, y1, x2, y2]


def random_frames(rng):
    keys = [(v, t) for v in "ab" for t in range(902, 902 + rng.randint(1, 4))]
    gt, det, people = {}, {}, {}
    for k in keys:
        if rng.random() < 0.2:
            continue
        people[k] = [random_box(rng) for _ in range(rng.randint(0, 4))]
        rows = [(b, rng.randint(1, 5)) for b in people[k] for _ in range(rng.randint(1, 2))]
        gt[k] = (np.array([b for b, _ in rows]).reshape(-1, 4), np.array([l for _, l in rows],
                                                                          dtype=int),
                 np.arange(len(rows), dtype=float))
    for k in keys:
        n = rng.choice([0, 5, 20, 70])
        boxes = [random_box(rng, rng.choice(people[k]) if people.get(k) and rng.random() < 0.7
                            else None) for _ in range(n)]
        det[k] = (np.array(boxes).reshape(-1, 4), np.array([rng.randint(1, 5) for _ in boxes]),
                  np.array([rng.random() for _ in boxes]))   # distinct scores: no ties
    excluded = rng.choice([None, set(), {k for k in keys if rng.random() < 0.3}])
    return gt, det, excluded


def test_randomized_against_a_naive_implementation():
    rng = random.Random(0)
    ids = [1, 2, 4]  # labels 3 and 5 are outside the label map
    categories = [{"id": i, "name": f"class {i}"} for i in ids]
    checked = 0
    for _ in range(300):
        gt, det, excluded = random_frames(rng)
        want_map, want = naive_map(gt, det, ids, excluded)
        got = evaluate_frames(gt, det, categories, excluded)
        for i in ids:
            a, b = got["per_class"][f"class {i}"], want[i]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)
        assert (math.isnan(got["mAP"]) and math.isnan(want_map)) or \
            got["mAP"] == pytest.approx(want_map, abs=1e-12)
        checked += not math.isnan(want_map)
    assert checked > 200


# ---- the command ----------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "internvideo_jax.detection", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_score_command_prints_and_writes_the_metrics(tmp_path):
    # Class 1: AP 5/6 (the duplicate case); class 2: no ground truth -> null in the JSON;
    # class 3: ground truth, no detection -> 0. mAP = (5/6 + 0) / 2 = 5/12. v/903 is excluded.
    gt = write(tmp_path / "gt.csv", csv_text([gt_row("v", 902, A, 1, 0), gt_row("v", 902, B, 1, 1),
                                             gt_row("v", 902, B, 3), gt_row("v", 903, A, 1)]))
    det = write(tmp_path / "det.csv", csv_text([
        det_row("v", 902, A, 1, 0.9), det_row("v", 902, A, 1, 0.8), det_row("v", 902, B, 1, 0.7),
        det_row("v", 902, A, 2, 0.6), det_row("v", 903, B, 1, 0.99)]))
    exc = write(tmp_path / "exc.csv", "v,0903\n")
    out = tmp_path / "metrics.json"
    p = run_cli("score", "--ground-truth", gt, "--detections", det, "--labelmap",
                labelmap(tmp_path), "--exclusions", exc, "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "frame-mAP@0.5IOU 0.4167 over 2 of 3 classes" in p.stdout
    assert "0.8333  class 1" in p.stdout and "   n/a  class 2" in p.stdout
    metrics = json.loads(out.read_text())
    assert metrics == {"mAP": pytest.approx(5 / 12, abs=1e-15),
                       "per_class": {"class 1": pytest.approx(5 / 6, abs=1e-15), "class 2": None,
                                     "class 3": 0.0}}


def test_score_command_reports_a_bad_file_in_one_line(tmp_path):
    gt = write(tmp_path / "gt.csv", csv_text([gt_row("v", 902, A, 1)]))
    det = write(tmp_path / "det.csv", "v,902,0.1,0.1,0.5,0.5,1,0.9\nv,902,0.1\n")
    args = ["score", "--ground-truth", gt, "--labelmap", labelmap(tmp_path)]
    p = run_cli(*args, "--detections", det)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"error: {det}:2: expected 2 columns (video_id, timestamp), 7 or 8 " \
                       f"(video_id, timestamp, x1, y1, x2, y2, action_id[, score or " \
                       f"person_id]); got 3\n"
    p = run_cli(*args, "--detections", str(tmp_path / "missing.csv"))
    assert p.returncode == 2 and p.stderr == f"error: {tmp_path / 'missing.csv'}: no such file\n"
