"""The result pictures: written, read back with Pillow, checked where the pixels are known."""
import json

import numpy as np
import pytest
from PIL import Image

from internvideo_jax.evaluation import pictures as P


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _rows():
    rows = [{"step": s, "loss": 2.0 / (1 + s), "lr": 1e-3 * min(1, s / 20)}
            for s in range(0, 100, 5)]
    rows.insert(8, {"step": 40, "eval_top1": 0.31})
    rows.append({"step": 95, "eval_top1": 0.52})
    return rows


def test_training_curves_one_panel_per_metric(tmp_path):
    path = tmp_path / "curves.png"
    P.training_curves(_rows(), str(path))
    panel_h = P.CURVE_TITLE + P.CURVE_H + P.CURVE_GAP
    pixels = _read(path)
    assert pixels.shape == (3 * panel_h, P.CURVE_LEFT + P.CURVE_W + P.CURVE_RIGHT, 3)
    assert list(P.curve_series(_rows())) == ["loss", "lr", "eval_top1"]
    assert P.curve_series(_rows())["eval_top1"] == [(40, 0.31), (95, 0.52)]
    # the eval panel (third) has its two points drawn in the curve colour
    third = pixels[2 * panel_h + P.CURVE_TITLE:2 * panel_h + P.CURVE_TITLE + P.CURVE_H]
    assert (third == P.CURVE_COLOUR).all(axis=-1).any()


def test_training_curves_keep_the_last_value_of_a_repeated_step(tmp_path):
    rows = _rows()
    # a run resumed from step 50 after logging up to 70 with other values, then from 30
    stale = [{"step": s, "loss": 5.0, "lr": 9e-3} for s in range(50, 75, 5)]
    stale2 = [{"step": s, "loss": 4.0, "lr": 8e-3} for s in range(30, 60, 5)]
    resumed = ([r for r in rows if r["step"] < 50] + stale + stale2
               + [r for r in rows if r["step"] >= 30])
    P.training_curves(resumed, str(tmp_path / "resumed.png"))
    P.training_curves(rows, str(tmp_path / "clean.png"))
    assert np.array_equal(_read(tmp_path / "resumed.png"), _read(tmp_path / "clean.png"))


def test_training_curves_of_workdir(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in _rows())
    path = P.training_curves_of(str(tmp_path))
    assert path == str(tmp_path / "curves.png")
    P.training_curves(_rows(), str(tmp_path / "direct.png"))
    assert np.array_equal(_read(path), _read(tmp_path / "direct.png"))


def test_training_curves_need_a_metric(tmp_path):
    with pytest.raises(ValueError, match="no loss"):
        P.training_curves([{"step": 1, "grad_norm": 2.0}], str(tmp_path / "x.png"))


def _timeline(tmp_path, name="timeline.png"):
    truth = [{"segment": [10.0, 30.0], "label": "jump"}, {"segment": [60.0, 90.0], "label": "run"}]
    preds = [{"segment": [12.0, 28.0], "label": "jump", "score": 0.4},
             {"segment": [55.0, 95.0], "label": "run", "score": 0.9},
             {"segment": [0.0, 5.0], "label": "swim", "score": 0.1}]
    path = tmp_path / name
    P.localization_timeline("v_abc", 120.0, truth, preds, str(path), top=2)
    return path


def test_localization_timeline_bars_span_their_seconds(tmp_path):
    pixels = _read(_timeline(tmp_path))
    assert pixels.shape == (P.TIMELINE_TOP + 3 * P.ROW_H + P.AXIS_H,
                            P.TIMELINE_LEFT + P.TIMELINE_W + P.TIMELINE_RIGHT, 3)
    colours = P.class_colours(["jump", "run"])
    assert colours == {"jump": P.PALETTE[0], "run": P.PALETTE[1]}

    def bar_row(row):  # a pixel row through the bars of timeline row `row`
        return pixels[P.TIMELINE_TOP + row * P.ROW_H + P.TEXT_H + P.BAR_H // 2]

    x = lambda t: P.TIMELINE_LEFT + round(t / 120.0 * P.TIMELINE_W)  # the documented mapping
    jump = (bar_row(0) == colours["jump"]).all(axis=-1)
    assert np.flatnonzero(jump).tolist() == list(range(x(10.0), x(30.0)))
    run = (bar_row(0) == colours["run"]).all(axis=-1)
    assert np.flatnonzero(run).tolist() == list(range(x(60.0), x(90.0)))
    # predictions ranked by score: "run" 0.9 first, "jump" 0.4 second, "swim" left out (top=2)
    assert np.flatnonzero((bar_row(1) == colours["run"]).all(axis=-1)).tolist() == \
        list(range(x(55.0), x(95.0)))
    assert np.flatnonzero((bar_row(2) == colours["jump"]).all(axis=-1)).tolist() == \
        list(range(x(12.0), x(28.0)))
    assert P.timeline_columns([10.0, 30.0], 120.0) == (x(10.0), x(30.0) - 1)


def test_localization_timeline_is_deterministic(tmp_path):
    assert _timeline(tmp_path, "a.png").read_bytes() == _timeline(tmp_path, "b.png").read_bytes()


def test_class_colours_follow_class_order():
    assert P.class_colours(["b", "a", 3, 1]) == {1: P.PALETTE[0], 3: P.PALETTE[1],
                                                 "a": P.PALETTE[2], "b": P.PALETTE[3]}


def test_keyframe_boxes_edges_and_insides(tmp_path):
    h, w, scale = 40, 60, 4
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 2
    frame[..., 2] = 100
    truth = np.array([[0.1, 0.5, 0.4, 0.9]], np.float32)
    detected = np.array([[0.6, 0.4, 0.9, 0.8]], np.float32)
    path = tmp_path / "boxes.png"
    P.keyframe_boxes(frame, truth, ["stand"], detected, [("sit", 0.75)], str(path), scale=scale)
    pixels = _read(path)
    assert pixels.shape == (h * scale, w * scale, 3)
    big = np.repeat(np.repeat(frame, scale, 0), scale, 1)
    for box, colour in ((truth[0], P.TRUTH_COLOUR), (detected[0], P.DETECTION_COLOUR)):
        left, top = round(box[0] * w * scale), round(box[1] * h * scale)
        right, bottom = round(box[2] * w * scale) - 1, round(box[3] * h * scale) - 1
        assert P.box_pixels(box, w * scale, h * scale) == (left, top, right, bottom)
        for k in range(P.BOX_LINE):
            for edge in (pixels[top:bottom + 1, left + k], pixels[top:bottom + 1, right - k],
                         pixels[top + k, left:right + 1], pixels[bottom - k, left:right + 1]):
                assert (edge == colour).all()
        inner = (slice(top + P.BOX_LINE, bottom + 1 - P.BOX_LINE),
                 slice(left + P.BOX_LINE, right + 1 - P.BOX_LINE))
        assert np.array_equal(pixels[inner], big[inner])
        # the label strip sits above the box
        assert (pixels[top - P.TEXT_H:top, left] == colour).all()


def test_keyframe_boxes_label_below_a_box_at_the_top(tmp_path):
    frame = np.full((20, 20, 3), 50, np.uint8)
    path = tmp_path / "top.png"
    P.keyframe_boxes(frame, np.array([[0.0, 0.0, 0.5, 0.5]]), ["x"], np.zeros((0, 4)), [],
                     str(path), scale=4)
    pixels = _read(path)
    assert (pixels[40:40 + P.TEXT_H, 0] == P.TRUTH_COLOUR).all()


def test_bar_chart_heights_are_proportional(tmp_path):
    names, values = ["archery", "bowling", "cooking", "diving"], [0.0, 0.25, 0.5, 1.0]
    path = tmp_path / "bars.png"
    P.bar_chart(names, values, str(path), "zero-shot top-1 per class")
    pixels = _read(path)
    baseline = P.CHART_TOP + P.CHART_H
    assert pixels.shape[0] > baseline and pixels.shape[1] >= P.bar_columns(3)[1]
    for i, v in enumerate(values):
        first, last = P.bar_columns(i)
        for column in (first, (first + last) // 2, last):
            rows = np.flatnonzero((pixels[:, column] == P.BAR_COLOUR).all(axis=-1))
            assert len(rows) == round(v * P.CHART_H)
            if len(rows):
                assert rows.tolist() == list(range(baseline - len(rows), baseline))
        assert not (pixels[:, last + 1] == P.BAR_COLOUR).all(axis=-1).any()
    P.bar_chart(names, values, str(tmp_path / "again.png"), "zero-shot top-1 per class")
    assert path.read_bytes() == (tmp_path / "again.png").read_bytes()


def test_bar_chart_rejects_values_outside_0_1(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.bar_chart(["a"], [1.5], str(tmp_path / "x.png"), "t")
    with pytest.raises(ValueError, match="names"):
        P.bar_chart(["a", "b"], [0.5], str(tmp_path / "x.png"), "t")


def test_nice_ticks():
    assert P.nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0]
    assert P.nice_ticks(0.0, 1.0, 6) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert P.nice_ticks(0.0, 120.0, 10) == [float(t) for t in range(0, 121, 20)]
    assert P.nice_ticks(3.0, 3.0) == [3.0]


def test_training_curves_are_deterministic(tmp_path):
    P.training_curves(_rows(), str(tmp_path / "a.png"))
    P.training_curves(_rows(), str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_contact_sheet_marks_the_right_video(tmp_path):
    from internvideo_jax.evaluation import pictures as P
    frames = [[np.full((8, 8, 3), 40 * (c + 1), np.uint8) for c in range(3)] for _ in range(2)]
    right = [[False, True, False], [False, False, False]]
    path = str(tmp_path / "sheet.png")
    P.contact_sheet(["a red square", "a blue circle"], frames, right, path)
    im = np.asarray(Image.open(path).convert("RGB"))
    x, y = P.thumbnail_origin(0, 1)
    assert tuple(im[y, x + P.SHEET_THUMB // 2]) == P.RIGHT_COLOUR  # the frame's top edge
    assert tuple(im[y + P.SHEET_BORDER, x + P.SHEET_THUMB // 2]) == (80, 80, 80)  # inside
    x, y = P.thumbnail_origin(1, 1)
    assert tuple(im[y, x + P.SHEET_THUMB // 2]) == (80, 80, 80)  # not marked: the frame itself
    assert im.shape[0] == P.thumbnail_origin(2, 0)[1] - P.TEXT_H
