"""ActivityNet detection evaluation (internvideo_jax/localization/activitynet.py): hand-computed
cases of the official rules, a randomized comparison with a naive implementation written here from
those rules, and the `score` command end to end.

AP below is the official VOC interpolation: precision p_i and recall r_i after the i-th ranked
prediction; AP = sum over the steps where recall grows of (r_i - r_{i-1}) * max_{j >= i} p_j, the
recall left after the last prediction counting precision 0.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from internvideo_jax.localization.activitynet import (FormatError, evaluate_detection,
                                                      interpolated_average_precision, load_json,
                                                      parse_tious, segment_iou)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gt(videos: dict) -> dict:
    """Ground truth from {video: (subset, [(start, end, label), ...])}."""
    return {"database": {vid: {"subset": subset, "duration": 100.0,
                               "annotations": [{"segment": [s, e], "label": label}
                                               for s, e, label in anns]}
                         for vid, (subset, anns) in videos.items()}}


def preds(videos: dict) -> dict:
    """Predictions from {video: [(start, end, label, score), ...]}."""
    return {"results": {vid: [{"segment": [s, e], "label": label, "score": score}
                              for s, e, label, score in rs] for vid, rs in videos.items()}}


def evaluate(truth, predictions, tious=(0.5,), **kw):
    return evaluate_detection(gt(truth), preds(predictions), "validation", tious, **kw)


def test_perfect_detections_give_ap_one():
    r = evaluate({"v1": ("validation", [(0, 10, "A"), (20, 30, "B")])},
                 {"v1": [(0, 10, "A", 0.9), (20, 30, "B", 0.8)]})
    assert r["mAP"] == {"0.50": 1.0} and r["average_mAP"] == 1.0
    assert r["per_class"] == {"A": {"0.50": 1.0}, "B": {"0.50": 1.0}}
    assert r["ground_truth"] == {"videos": 1, "instances": 2, "classes": 2}
    assert r["predictions"] == {"counted": 2, "ignored": 0, "ignored_labels": []}


def test_duplicate_detection_of_one_segment_is_a_false_positive():
    # Ground truth g1 [0, 10], g2 [20, 30]. Ranked: [0, 10] 0.9 TP (g1); [1, 10] 0.8: g1 has tIoU
    # 0.9 but is taken, g2 has 0 < 0.5 -> FP; [20, 30] 0.7 TP (g2).
    # p = 1, 1/2, 2/3; r = 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    r = evaluate({"v1": ("validation", [(0, 10, "A"), (20, 30, "A")])},
                 {"v1": [(0, 10, "A", 0.9), (1, 10, "A", 0.8), (20, 30, "A", 0.7)]})
    assert r["mAP"]["0.50"] == pytest.approx(5 / 6, abs=1e-15)


def test_tied_scores_are_ranked_as_the_official_argsort_ranks_them():
    # Ground truth [0, 10] in v1 and v2. Predictions: a TP on v1 and an FP on v3 (no ground
    # truth), both scored 0.5, then a TP on v2 at 0.4. The official rank is
    # scores.argsort()[::-1] over the predictions in file order, which puts one of the tied pair
    # first by its position:
    #   FP first: p = 0, 1/2, 2/3; r = 0, 1/2, 1 -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    #   TP first: p = 1, 1/2, 2/3; r = 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    # so the file order of the tied pair decides, and both orders must follow that rule.
    truth = {"v1": ("validation", [(0, 10, "A")]), "v2": ("validation", [(0, 10, "A")])}
    first = int(np.array([0.5, 0.5, 0.4]).argsort()[::-1][0])  # position 0 or 1 ranks first
    for videos in (["v1", "v3"], ["v3", "v1"]):
        ap = evaluate(truth, {videos[0]: [(0, 10, "A", 0.5)], videos[1]: [(0, 10, "A", 0.5)],
                              "v2": [(0, 10, "A", 0.4)]})["mAP"]["0.50"]
        assert ap == pytest.approx(5 / 6 if videos[first] == "v1" else 2 / 3, abs=1e-15)


def test_a_matched_segment_is_skipped_for_the_next_one_at_each_threshold():
    # Ground truth g1 [0, 10], g2 [0, 8]; two predictions [0, 10] (0.9, 0.8): tIoU 1 with g1,
    # 0.8 with g2. At 0.5 the second skips the taken g1 and matches g2: AP 1. At 0.85 g2 is
    # below the threshold: TP, FP; p = 1, 1/2; r = 1/2, 1/2 -> AP = 1/2.
    r = evaluate({"v1": ("validation", [(0, 10, "A"), (0, 8, "A")])},
                 {"v1": [(0, 10, "A", 0.9), (0, 10, "A", 0.8)]}, tious=(0.5, 0.85))
    assert r["mAP"] == {"0.50": 1.0, "0.85": 0.5}


def test_a_class_without_ground_truth_in_the_subset_is_not_a_class():
    # C is annotated only in training, D nowhere: neither is a class of validation; their
    # predictions are left out and counted (the official code raises KeyError on them).
    r = evaluate({"v1": ("validation", [(0, 10, "A")]), "v9": ("training", [(0, 10, "C")])},
                 {"v1": [(0, 10, "A", 0.9), (0, 10, "C", 0.8), (0, 10, "D", 0.7),
                         (0, 10, "C", 0.6)]})
    assert list(r["per_class"]) == ["A"] and r["mAP"]["0.50"] == 1.0
    assert r["ground_truth"] == {"videos": 1, "instances": 1, "classes": 1}
    assert r["predictions"] == {"counted": 1, "ignored": 3, "ignored_labels": ["C", "D"]}


def test_a_class_without_predictions_has_ap_zero_and_lowers_the_map():
    # A: AP 1; B: no predictions, AP 0 -> mAP 1/2.
    r = evaluate({"v1": ("validation", [(0, 10, "A"), (20, 30, "B")])},
                 {"v1": [(0, 10, "A", 0.9)]})
    assert r["per_class"] == {"A": {"0.50": 1.0}, "B": {"0.50": 0.0}}
    assert r["mAP"]["0.50"] == 0.5


def test_a_video_without_predictions_only_lowers_recall():
    # Ground truth in v1 and v2, one exact prediction on v1: p = 1, r = 1/2 -> AP = 1/2.
    r = evaluate({"v1": ("validation", [(0, 10, "A")]), "v2": ("validation", [(0, 10, "A")])},
                 {"v1": [(0, 10, "A", 0.9)]})
    assert r["mAP"]["0.50"] == 0.5


@pytest.mark.parametrize("video", ["v9", "not_in_the_database"])
def test_a_prediction_on_a_video_outside_the_subset_is_a_false_positive(video):
    # v9 is a training video with the same segment. Ranked: FP (0.9), TP (0.8): p = 0, 1/2;
    # r = 0, 1 -> AP = 1 * 1/2.
    r = evaluate({"v1": ("validation", [(0, 10, "A")]), "v9": ("training", [(0, 10, "A")])},
                 {video: [(0, 10, "A", 0.9)], "v1": [(0, 10, "A", 0.8)]})
    assert r["mAP"]["0.50"] == 0.5
    assert r["predictions"]["counted"] == 2


def test_a_tiou_exactly_at_the_threshold_counts():
    # [0, 5] in [0, 10]: intersection 5, union 10 + 5 - 5 = 10, tIoU 0.5 exactly in binary.
    assert segment_iou(np.array([[0.0, 5.0]]), np.array([[0.0, 10.0]]))[0, 0] == 0.5
    r = evaluate({"v1": ("validation", [(0, 10, "A")])}, {"v1": [(0, 5, "A", 0.9)]},
                 tious=(0.5, 0.55))
    assert r["mAP"] == {"0.50": 1.0, "0.55": 0.0} and r["average_mAP"] == 0.5


def test_the_average_map_is_the_mean_over_thresholds():
    # tIoU 6 / 10 = 0.6: a TP at 0.3 and 0.5, an FP at 0.7 -> APs 1, 1, 0 -> average 2/3.
    r = evaluate({"v1": ("validation", [(0, 10, "A")])}, {"v1": [(0, 6, "A", 0.9)]},
                 tious=(0.3, 0.5, 0.7))
    assert r["mAP"] == {"0.30": 1.0, "0.50": 1.0, "0.70": 0.0}
    assert r["average_mAP"] == pytest.approx(2 / 3, abs=1e-15)


def test_blocked_videos_are_left_out_of_both():
    # Unblocked: TP on v1, FP on v2 (no overlap); r = 1/2, 1/2 -> AP 1/2. v2 blocked: its ground
    # truth and its prediction are gone -> AP 1.
    truth = {"v1": ("validation", [(0, 10, "A")]), "v2": ("validation", [(0, 10, "A")])}
    predictions = {"v1": [(0, 10, "A", 0.9)], "v2": [(50, 60, "A", 0.8)]}
    assert evaluate(truth, predictions)["mAP"]["0.50"] == 0.5
    r = evaluate(truth, predictions, blocked=["v2"])
    assert r["mAP"]["0.50"] == 1.0
    assert r["ground_truth"]["instances"] == 1 and r["predictions"]["counted"] == 1


def test_two_zero_length_segments_match_at_every_threshold_as_in_the_official_code():
    # [7, 7] against [5, 5]: intersection 0, union 0 -> tIoU NaN, which `tIoU < threshold` never
    # rejects, so the official code takes it as a match: AP 1 even at 0.95.
    assert np.isnan(segment_iou(np.array([[7.0, 7.0]]), np.array([[5.0, 5.0]]))[0, 0])
    r = evaluate({"v1": ("validation", [(5, 5, "A")])}, {"v1": [(7, 7, "A", 0.9)]},
                 tious=(0.5, 0.95))
    assert r["mAP"] == {"0.50": 1.0, "0.95": 1.0}


def test_labels_are_compared_as_given():
    # Integer label 1 in the ground truth; a prediction labelled "1" is another label.
    r = evaluate({"v1": ("validation", [(0, 10, 1)])},
                 {"v1": [(0, 10, 1, 0.9), (0, 10, "1", 0.8)]})
    assert r["per_class"] == {1: {"0.50": 1.0}}
    assert r["predictions"]["ignored_labels"] == ["1"]


def test_interpolated_average_precision_by_hand():
    # p = 0, 1/2, 2/3; r = 0, 1/2, 1: envelope 2/3 over both recall steps -> AP 2/3.
    assert interpolated_average_precision(np.array([0, 0.5, 2 / 3]),
                                          np.array([0, 0.5, 1])) == pytest.approx(2 / 3)
    # recall stops at 1/2: the step to 1 counts precision 0 -> AP = 1/2 * 1.
    assert interpolated_average_precision(np.array([1.0]), np.array([0.5])) == 0.5


def test_parse_tious():
    assert parse_tious("0.3:0.1:0.7") == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert parse_tious("0.5:0.05:0.95") == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9,
                                             0.95]
    assert parse_tious("0.5,0.75,0.95") == [0.5, 0.75, 0.95]
    assert parse_tious("0.5") == [0.5]
    for bad in ("a", "0.7:0.1:0.3", "0.5:0:1", "0:0.1:0.5", "1.5", "0.333,0.334", ""):
        with pytest.raises(ValueError):
            parse_tious(bad)


def test_malformed_inputs_say_what_is_wrong():
    truth = gt({"v1": ("validation", [(0, 10, "A")])})
    with pytest.raises(FormatError, match="'database' key"):
        evaluate_detection({"videos": {}}, preds({}), "validation", [0.5])
    with pytest.raises(FormatError, match="'results' key"):
        evaluate_detection(truth, {"v1": []}, "validation", [0.5])
    with pytest.raises(FormatError, match="video 'v2' annotation 0: segment .* ends before"):
        evaluate_detection(gt({"v2": ("validation", [(5, 3, "A")])}), preds({}), "validation",
                           [0.5])
    with pytest.raises(FormatError, match="predictions: video 'v1' prediction 0: segment"):
        evaluate_detection(truth, preds({"v1": [(5, 3, "A", 0.5)]}), "validation", [0.5])
    with pytest.raises(FormatError, match="'score' must be a finite number"):
        evaluate_detection(truth, preds({"v1": [(0, 3, "A", "high")]}), "validation", [0.5])
    with pytest.raises(FormatError, match="no annotations in subset 'test'.*'validation'"):
        evaluate_detection(truth, preds({}), "test", [0.5])
    with pytest.raises(ValueError, match="first two decimals"):
        evaluate_detection(truth, preds({}), "validation", [0.5, 0.501])


# ---- a naive implementation of the official rules, for random inputs without ties ---------------
def naive_evaluate(truth: dict, predictions: dict, subset: str, tious) -> dict:
    """Per threshold: per class (first occurrence in the subset), predictions by falling score;
    each matches the unmatched ground truth of its video and class with the highest tIoU if that
    tIoU >= threshold, else is a false positive; AP = sum over recall steps of the step times
    the best precision at or after it. -> {"mAP": [...], "per_class": {label: [...]}}."""
    classes, gts = [], []
    for vid, video in truth["database"].items():
        if video["subset"] != subset:
            continue
        for ann in video["annotations"]:
            if ann["label"] not in classes:
                classes.append(ann["label"])
            gts.append((vid, ann["segment"][0], ann["segment"][1], ann["label"]))
    per_class = {c: [] for c in classes}
    for threshold in tious:
        for c in classes:
            mine = [g for g in gts if g[3] == c]
            ranked = sorted(((vid, r["segment"][0], r["segment"][1], r["score"])
                             for vid, rs in predictions["results"].items() for r in rs
                             if r["label"] == c), key=lambda p: -p[3])
            used = [False] * len(mine)
            tp = fp = 0
            precision, recall = [], []
            for vid, s, e, _ in ranked:
                best, best_iou = None, -1.0
                for k, (g_vid, g_s, g_e, _) in enumerate(mine):
                    if g_vid != vid or used[k]:
                        continue
                    inter = max(0.0, min(e, g_e) - max(s, g_s))
                    iou = inter / ((g_e - g_s) + (e - s) - inter)
                    if iou > best_iou:
                        best, best_iou = k, iou
                if best is not None and best_iou >= threshold:
                    used[best] = True
                    tp += 1
                else:
                    fp += 1
                precision.append(tp / (tp + fp))
                recall.append(tp / len(mine))
            ap, previous = 0.0, 0.0
            for i in range(len(recall)):
                if recall[i] != previous:
                    ap += (recall[i] - previous) * max(precision[i:])
                    previous = recall[i]
            per_class[c].append(ap)
    mean = [sum(per_class[c][t] for c in classes) / len(classes) for t in range(len(tious))]
    return {"mAP": mean, "per_class": per_class}


def random_case(rng: np.random.Generator) -> tuple[dict, dict]:
    """Ground truth over two subsets and predictions (also on unknown videos); distinct random
    scores and float times, so no score ties and no positive tIoU ties."""
    labels = ["a", "b", "c", "d"]
    truth = {}
    for v in range(int(rng.integers(2, 8))):
        anns = []
        for _ in range(int(rng.integers(0, 5))):
            s = float(rng.uniform(0, 50))
            anns.append((s, s + float(rng.uniform(0.5, 20)), labels[int(rng.integers(4))]))
        truth[f"v{v}"] = ("validation" if v % 3 else "training", anns)
    truth["v1"][1].append((1.0, 9.0, "a"))  # the subset has at least one class
    predictions = {}
    for vid in list(truth) + ["unknown"]:
        rs = []
        for _ in range(int(rng.integers(0, 25))):
            s = float(rng.uniform(0, 50))
            rs.append((s, s + float(rng.uniform(0.5, 20)), labels[int(rng.integers(4))],
                       float(rng.random())))
        for s, e, label in truth.get(vid, (None, []))[1] * 2:  # near-copies, duplicates too
            d = e - s
            rs.append((s + d * float(rng.uniform(-0.3, 0.3)), e + d * float(rng.uniform(-0.3, 0.3)),
                       label, float(rng.random())))
        predictions[vid] = rs
    return gt(truth), preds(predictions)


def test_random_inputs_agree_with_a_naive_implementation():
    rng = np.random.default_rng(0)
    tious = [0.1, 0.3, 0.5, 0.7, 0.9]
    for _ in range(40):
        truth, predictions = random_case(rng)
        got = evaluate_detection(truth, predictions, "validation", tious)
        # the naive one sees only the predictions the evaluator counts
        known = {a["label"] for v in truth["database"].values() if v["subset"] == "validation"
                 for a in v["annotations"]}
        want = naive_evaluate(truth, {"results": {vid: [r for r in rs if r["label"] in known]
                                                  for vid, rs in predictions["results"].items()}},
                              "validation", tious)
        assert list(got["per_class"]) == list(want["per_class"])
        for label, aps in want["per_class"].items():
            np.testing.assert_allclose(list(got["per_class"][label].values()), aps, rtol=0,
                                       atol=1e-12)
        np.testing.assert_allclose(list(got["mAP"].values()), want["mAP"], rtol=0, atol=1e-12)
        assert got["average_mAP"] == pytest.approx(np.mean(want["mAP"]), abs=1e-12)


# ---- the score command --------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "internvideo_jax.localization", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_score_command_prints_and_writes_the_metrics(tmp_path):
    # A: TP at 0.3 and 0.5 (tIoU 0.6), FP at 0.7 -> APs 1, 1, 0; B: no predictions -> 0;
    # mAP 1/2, 1/2, 0; average 1/3. One prediction of an unknown label is ignored.
    truth = gt({"v1": ("validation", [(0, 10, "A"), (20, 30, "B")])})
    results = preds({"v1": [(0, 6, "A", 0.9), (0, 6, "Z", 0.5)]})
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    p = run_cli("score", "--ground-truth", str(tmp_path / "gt.json"), "--predictions",
                str(tmp_path / "results.json"), "--tiou", "0.3:0.2:0.7", "--out", str(out))
    assert p.returncode == 0, p.stderr
    metrics = json.loads(out.read_text())
    assert metrics["mAP"] == {"0.30": 0.5, "0.50": 0.5, "0.70": 0.0}
    assert metrics["average_mAP"] == pytest.approx(1 / 3, abs=1e-15)
    assert metrics["per_class"]["B"] == {"0.30": 0.0, "0.50": 0.0, "0.70": 0.0}
    assert "0.50" in p.stdout and "50.00" in p.stdout and "33.33" in p.stdout
    assert "warning: 1 predictions ignored" in p.stderr and "'Z'" in p.stderr


def test_score_command_reports_a_bad_file_in_one_line(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(gt({"v1": ("validation", [(0, 10, "A")])})))
    (tmp_path / "results.json").write_text('{"results": {"v1": [{"segment": [5, 1], '
                                           '"label": "A", "score": 1}]}}')
    (tmp_path / "broken.json").write_text("{not json")
    for predictions, message in [("results.json", "video 'v1' prediction 0: segment"),
                                 ("broken.json", "not a JSON file"),
                                 ("missing.json", "no such file")]:
        p = run_cli("score", "--ground-truth", str(tmp_path / "gt.json"), "--predictions",
                    str(tmp_path / predictions))
        assert p.returncode == 2
        assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
        assert message in p.stderr and "Traceback" not in p.stderr


def test_load_json_names_the_file(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="list.json: holds a JSON list"):
        load_json(str(tmp_path / "list.json"))
