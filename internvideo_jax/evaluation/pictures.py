"""Result pictures written as PNG with Pillow (headless, no plotting stack): training curves, an
action-localization timeline, AVA keyframe boxes and a per-class accuracy bar chart.

Every function writes one PNG to the path its caller gives; the same input gives the same pixels
(PIL's default font, no time stamps or other varying metadata in the file). Sizes and positions
are in pixels; the layout constants below are the ones the pictures' geometry is computed from.
"""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from internvideo_jax.training.metrics_writer import read_metrics

TEXT_H = 14  # px: the height reserved for one line of PIL's default font

# training_curves: one panel per metric, stacked; each panel's plot area is CURVE_W x CURVE_H px,
# CURVE_LEFT px from the image's left edge (room for the value ticks), CURVE_TITLE px below the
# panel's top (its title), CURVE_GAP px above the next panel (the step ticks).
CURVE_LEFT, CURVE_RIGHT, CURVE_W, CURVE_H, CURVE_TITLE, CURVE_GAP = 70, 20, 640, 140, 20, 30
CURVE_COLOUR = (31, 119, 180)

# localization_timeline: the seconds axis spans TIMELINE_W px starting TIMELINE_LEFT px from the
# left edge: second t maps to x = TIMELINE_LEFT + t / duration_s * TIMELINE_W. A segment
# [start, end] fills columns round(x(start)) .. round(x(end)) - 1 (at least one column) of a
# ROW_H-px row: its label text in the row's top TEXT_H px, then a solid bar of BAR_H px. The rows
# start TIMELINE_TOP px from the top (the title): ground truth first, the predictions below.
TIMELINE_LEFT, TIMELINE_RIGHT, TIMELINE_W, TIMELINE_TOP = 80, 20, 800, 24
ROW_H, BAR_H, AXIS_H = 30, 12, 30
PALETTE = [(141, 211, 199), (255, 237, 111), (190, 186, 218), (251, 128, 114), (128, 177, 211),
           (253, 180, 98), (179, 222, 105), (252, 205, 229), (188, 128, 189), (204, 235, 197)]

# keyframe_boxes: the frame upscaled `scale` times (nearest); a normalised box [x1, y1, x2, y2]
# covers columns round(x1 * W * scale) .. round(x2 * W * scale) - 1 (rows likewise); its outline
# is BOX_LINE px wide, inside that span. The label sits on a filled strip above the box (below
# it when the box touches the top).
TRUTH_COLOUR, DETECTION_COLOUR, BOX_LINE = (0, 255, 0), (255, 0, 0), 2

# bar_chart: bars BAR_W px wide, BAR_GAP px apart, the first BAR_GAP px right of CHART_LEFT; a
# value v in [0, 1] is a bar round(v * CHART_H) px tall standing on the baseline, the row
# CHART_TOP + CHART_H (the bar fills the rows above it). Class names run vertically below.
CHART_LEFT, CHART_TOP, CHART_H, BAR_W, BAR_GAP = 50, 40, 200, 24, 8
BAR_COLOUR = (70, 130, 180)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_width(text: str) -> int:
    box = _font().getbbox(text)
    return int(box[2] - box[0])


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Tick values within [lo, hi], multiples of the smallest step 1, 2 or 5 times a power of ten
    that is at least (hi - lo) / (count - 1), so at most about `count` of them; [lo] if hi <= lo."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = [round((first + i) * step, 12) for i in range(int((hi - lo) / step + 1e-9) + 2)]
    return [t for t in ticks if lo - 1e-9 * step <= t <= hi + 1e-9 * step]


def _tick_text(v: float) -> str:
    return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.1e}"


# ---------------------------------------------------------------- training curves

def curve_series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per panel metric (loss, lr, then the eval_* keys sorted), the (step, value) points in step
    order, keeping the last value logged for each step (a resumed run logs its steps again) and
    leaving out non-finite values. Metrics no row logs get no entry."""
    last: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("loss", "lr") or key.startswith("eval_"):
                last.setdefault(key, {})[int(row["step"])] = float(value)
    order = ([k for k in ("loss", "lr") if k in last]
             + sorted(k for k in last if k.startswith("eval_")))
    series = {k: sorted((s, v) for s, v in last[k].items() if math.isfinite(v)) for k in order}
    return {k: points for k, points in series.items() if points}


def training_curves(rows: list[dict], path: str) -> None:
    """One panel per metric of curve_series(rows), stacked top to bottom, all on the same step
    axis (the steps any panel has); each with its title, value ticks on the left and step ticks
    below. Width CURVE_LEFT + CURVE_W + CURVE_RIGHT; each panel CURVE_TITLE + CURVE_H + CURVE_GAP
    tall. Raises ValueError when no row has a loss, lr or eval_* value."""
    series = curve_series(rows)
    if not series:
        raise ValueError("no loss, lr or eval_* values in the metrics rows")
    steps = [s for points in series.values() for s, _ in points]
    lo, hi = min(steps), max(steps)
    x_range = (lo, hi) if hi > lo else (lo - 1, hi + 1)
    panel_h = CURVE_TITLE + CURVE_H + CURVE_GAP
    image = Image.new("RGB", (CURVE_LEFT + CURVE_W + CURVE_RIGHT, panel_h * len(series)), "white")
    draw = ImageDraw.Draw(image)
    for i, (name, points) in enumerate(series.items()):
        _curve_panel(draw, i * panel_h, name, points, x_range)
    image.save(path, format="PNG")


def _curve_panel(draw: ImageDraw.ImageDraw, top: int, name: str,
                 points: list[tuple[int, float]], x_range: tuple[float, float]) -> None:
    """One panel whose plot area's top-left corner is (CURVE_LEFT, top + CURVE_TITLE)."""
    font = _font()
    y0 = top + CURVE_TITLE
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad

    def x(step: float) -> int:
        return CURVE_LEFT + round((step - x_range[0]) / (x_range[1] - x_range[0]) * (CURVE_W - 1))

    def y(value: float) -> int:
        return y0 + CURVE_H - 1 - round((value - lo) / (hi - lo) * (CURVE_H - 1))

    draw.text((CURVE_LEFT, top + 4), name, font=font, fill="black")
    draw.rectangle([CURVE_LEFT, y0, CURVE_LEFT + CURVE_W - 1, y0 + CURVE_H - 1], outline="grey")
    for v in nice_ticks(lo, hi):
        draw.line([CURVE_LEFT - 4, y(v), CURVE_LEFT - 1, y(v)], fill="black")
        text = _tick_text(v)
        draw.text((CURVE_LEFT - 6 - _text_width(text), y(v) - 6), text, font=font, fill="black")
    for s in nice_ticks(*x_range, 8):
        draw.line([x(s), y0 + CURVE_H, x(s), y0 + CURVE_H + 3], fill="black")
        text = _tick_text(s)
        draw.text((x(s) - _text_width(text) // 2, y0 + CURVE_H + 5), text, font=font, fill="black")
    xy = [(x(s), y(v)) for s, v in points]
    if len(xy) > 1:
        draw.line(xy, fill=CURVE_COLOUR, width=1)
    if len(xy) <= 50:  # sparse metrics (evaluations): mark each point
        for px, py in xy:
            draw.rectangle([px - 2, py - 2, px + 2, py + 2], fill=CURVE_COLOUR)


def training_curves_of(workdir: str) -> str:
    """Write WORKDIR/curves.png from WORKDIR/metrics.jsonl; returns its path."""
    path = os.path.join(workdir, "curves.png")
    training_curves(read_metrics(workdir), path)
    return path


# ---------------------------------------------------------------- which pictures a call wrote

def png_times(workdir: str) -> dict[str, int]:
    """{path relative to workdir: modification time in ns} of the PNGs under workdir (checkpoint
    folders left out): the "before" of written_since."""
    out = {}
    for root, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "tensorboard", "best"))
        for f in files:
            if f.endswith(".png"):
                path = os.path.join(root, f)
                out[os.path.relpath(path, workdir)] = os.stat(path).st_mtime_ns
    return out


def written_since(workdir: str, before: dict[str, int]) -> dict[str, str]:
    """{tag: path} of the PNGs under workdir written (new or rewritten) since png_times gave
    `before`; the tag is the relative path without '.png' ('pictures/timeline_v1')."""
    return {rel[:-len(".png")]: os.path.join(workdir, rel)
            for rel, t in sorted(png_times(workdir).items()) if before.get(rel) != t}


# ---------------------------------------------------------------- localization timeline

def class_colours(labels) -> dict:
    """PALETTE colours by class order (integers ascending, then strings ascending), cycling."""
    order = sorted(set(labels), key=lambda label: (isinstance(label, str), label))
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(order)}


def timeline_columns(segment, duration_s: float) -> tuple[int, int]:
    """The first and last pixel column (inclusive) a [start, end] segment in seconds fills,
    clipped to [0, duration_s]."""
    start, end = (min(max(float(t), 0.0), duration_s) for t in segment)
    first = TIMELINE_LEFT + round(start / duration_s * TIMELINE_W)
    last = TIMELINE_LEFT + round(end / duration_s * TIMELINE_W) - 1
    return first, max(first, last)


def localization_timeline(video_id: str, duration_s: float, ground_truth: list[dict],
                          predictions: list[dict], path: str, top: int = 10) -> None:
    """A timeline of one video: the ground-truth segments ({segment, label}) in the first row, the
    `top` highest-scoring predictions ({segment, label, score}) one per row below (highest first,
    ties in list order), each bar in its class's colour with its label (and score) above it, then
    a seconds axis with ticks. Width TIMELINE_LEFT + TIMELINE_W + TIMELINE_RIGHT; height
    TIMELINE_TOP + ROW_H * (1 + rows) + AXIS_H."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0; got {duration_s}")
    ranked = sorted(predictions, key=lambda p: -float(p["score"]))[:top]
    colours = class_colours([a["label"] for a in ground_truth] + [p["label"] for p in ranked])
    height = TIMELINE_TOP + ROW_H * (1 + len(ranked)) + AXIS_H
    image = Image.new("RGB", (TIMELINE_LEFT + TIMELINE_W + TIMELINE_RIGHT, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    draw.text((4, 4), f"{video_id} ({duration_s:g} s)", font=font, fill="black")
    row_top = TIMELINE_TOP
    draw.text((4, row_top + TEXT_H), "truth", font=font, fill="black")
    for a in ground_truth:
        _segment_bar(draw, row_top, a["segment"], str(a["label"]), colours[a["label"]], duration_s)
    for rank, p in enumerate(ranked, 1):
        row_top = TIMELINE_TOP + ROW_H * rank
        draw.text((4, row_top + TEXT_H), f"#{rank}", font=font, fill="black")
        _segment_bar(draw, row_top, p["segment"], f"{p['label']} {float(p['score']):.2f}",
                     colours[p["label"]], duration_s)
    _seconds_axis(draw, TIMELINE_TOP + ROW_H * (1 + len(ranked)), duration_s)
    image.save(path, format="PNG")


def _segment_bar(draw: ImageDraw.ImageDraw, row_top: int, segment, text: str, colour,
                 duration_s: float) -> None:
    first, last = timeline_columns(segment, duration_s)
    draw.text((first, row_top + 1), text, font=_font(), fill="black")
    draw.rectangle([first, row_top + TEXT_H, last, row_top + TEXT_H + BAR_H - 1], fill=colour)


def _seconds_axis(draw: ImageDraw.ImageDraw, y: int, duration_s: float) -> None:
    font = _font()
    draw.line([TIMELINE_LEFT, y, TIMELINE_LEFT + TIMELINE_W - 1, y], fill="black")
    for t in nice_ticks(0.0, duration_s, 10):
        x = TIMELINE_LEFT + round(t / duration_s * TIMELINE_W)
        draw.line([x, y, x, y + 4], fill="black")
        text = f"{t:g}"
        draw.text((x - _text_width(text) // 2, y + 6), text, font=font, fill="black")
    draw.text((TIMELINE_LEFT + TIMELINE_W - _text_width("s"), y + 16), "s", font=font, fill="black")


# ---------------------------------------------------------------- keyframe boxes

def box_pixels(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The inclusive pixel span (left, top, right, bottom) of a normalised [x1, y1, x2, y2] box
    in a width x height picture."""
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = round(x1 * width), round(y1 * height)
    right = max(left, round(x2 * width) - 1)
    bottom = max(top, round(y2 * height) - 1)
    return (min(left, width - 1), min(top, height - 1),
            min(right, width - 1), min(bottom, height - 1))


def keyframe_boxes(frame: np.ndarray, truth_boxes: np.ndarray, truth_labels: list[str],
                   detected_boxes: np.ndarray, detections: list[tuple[str, float]], path: str,
                   scale: int = 4) -> None:
    """The (H, W, 3) uint8 frame upscaled `scale` times (nearest neighbour, W*scale x H*scale
    px), the ground-truth boxes ((N, 4) normalised [x1, y1, x2, y2], one label name each)
    outlined in TRUTH_COLOUR, then the detections ((M, 4), one (label, score) each) in
    DETECTION_COLOUR, each labelled. The inside of a box keeps the frame's pixels."""
    frame = np.asarray(frame, np.uint8)
    h, w = frame.shape[:2]
    image = Image.fromarray(frame, "RGB").resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    for box, label in zip(np.asarray(truth_boxes).reshape(-1, 4), truth_labels):
        _labelled_box(draw, box_pixels(box, w * scale, h * scale), str(label), TRUTH_COLOUR)
    for box, (label, score) in zip(np.asarray(detected_boxes).reshape(-1, 4), detections):
        _labelled_box(draw, box_pixels(box, w * scale, h * scale), f"{label} {score:.2f}",
                      DETECTION_COLOUR)
    image.save(path, format="PNG")


def _labelled_box(draw: ImageDraw.ImageDraw, span: tuple[int, int, int, int], text: str,
                  colour) -> None:
    left, top, right, bottom = span
    draw.rectangle([left, top, right, bottom], outline=colour, width=BOX_LINE)
    y = top - TEXT_H if top >= TEXT_H else bottom + 1
    draw.rectangle([left, y, left + _text_width(text) + 3, y + TEXT_H - 1], fill=colour)
    draw.text((left + 2, y), text, font=_font(), fill="black")


# ---------------------------------------------------------------- bar chart

def bar_columns(index: int) -> tuple[int, int]:
    """The first and last pixel column (inclusive) of bar `index`."""
    first = CHART_LEFT + BAR_GAP + index * (BAR_W + BAR_GAP)
    return first, first + BAR_W - 1


def bar_chart(names: list[str], values, path: str, title: str) -> None:
    """Vertical bars of values in [0, 1] (per-class accuracy), one per name in the given order:
    bar i fills bar_columns(i) and the round(v * CHART_H) rows above the baseline
    (CHART_TOP + CHART_H); value ticks 0, 0.2, ... 1 on the left, the value above each bar, the
    names written vertically below. Raises ValueError for a value outside [0, 1] or NaN."""
    values = [float(v) for v in values]
    if len(values) != len(names):
        raise ValueError(f"{len(names)} names but {len(values)} values")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"values must be in [0, 1]; got {values}")
    font = _font()
    names_h = max((_text_width(n) for n in names), default=0) + 8
    baseline = CHART_TOP + CHART_H
    width = bar_columns(len(names))[0] + 10
    image = Image.new("RGB", (max(width, CHART_LEFT + _text_width(title) + 10),
                              baseline + names_h), "white")
    draw = ImageDraw.Draw(image)
    draw.text((CHART_LEFT, 6), title, font=font, fill="black")
    draw.line([CHART_LEFT - 1, CHART_TOP, CHART_LEFT - 1, baseline], fill="black")
    draw.line([CHART_LEFT - 1, baseline, width - 1, baseline], fill="black")
    for i in range(6):
        v = i / 5
        y = baseline - round(v * CHART_H)
        draw.line([CHART_LEFT - 5, y, CHART_LEFT - 2, y], fill="black")
        draw.text((CHART_LEFT - 8 - _text_width(f"{v:.1f}"), y - 6), f"{v:.1f}", font=font,
                  fill="black")
    for i, (name, v) in enumerate(zip(names, values)):
        first, last = bar_columns(i)
        bar_h = round(v * CHART_H)
        if bar_h:
            draw.rectangle([first, baseline - bar_h, last, baseline - 1], fill=BAR_COLOUR)
        draw.text((first, baseline - bar_h - TEXT_H), f"{v:.2f}", font=font, fill="black")
        image.paste(_vertical_text(name), (first + (BAR_W - TEXT_H) // 2, baseline + 4))
    image.save(path, format="PNG")


def _vertical_text(text: str) -> Image.Image:
    """`text` in black on white, turned a quarter clockwise (it reads top to bottom)."""
    strip = Image.new("RGB", (max(1, _text_width(text) + 2), TEXT_H), "white")
    ImageDraw.Draw(strip).text((0, 0), text, font=_font(), fill="black")
    return strip.transpose(Image.Transpose.ROTATE_270)


# Retrieval contact sheet: a row per text query, its top-k videos' middle frames.
SHEET_THUMB = 96  # px: each thumbnail's side (nearest-neighbour scaled)
SHEET_GAP = 6  # px between thumbnails and rows
SHEET_BORDER = 3  # px: the frame around the right video
RIGHT_COLOUR = (0, 200, 0)


def thumbnail_origin(row: int, col: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of thumbnail `col` of query `row` in the contact sheet."""
    x = SHEET_GAP + col * (SHEET_THUMB + SHEET_GAP)
    y = SHEET_GAP + row * (TEXT_H + SHEET_THUMB + 2 * SHEET_GAP) + TEXT_H
    return x, y


def contact_sheet(queries: list[str], frames: list[list[np.ndarray]], right: list[list[bool]],
                  path: str) -> None:
    """A retrieval contact sheet: per query its text, then its ranked videos' frames ((H, W, 3)
    uint8 each, scaled to SHEET_THUMB square) left to right, the right one(s) framed in
    RIGHT_COLOUR inside the thumbnail's SHEET_BORDER outer pixels."""
    if not (len(queries) == len(frames) == len(right)):
        raise ValueError(f"{len(queries)} queries, {len(frames)} rows of frames and "
                         f"{len(right)} rows of marks: one of each per query.")
    cols = max((len(r) for r in frames), default=0)
    width = SHEET_GAP + cols * (SHEET_THUMB + SHEET_GAP)
    height = thumbnail_origin(len(queries), 0)[1] - TEXT_H
    sheet = Image.new("RGB", (max(width, 200), height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (query, row, marks) in enumerate(zip(queries, frames, right)):
        x0, y0 = thumbnail_origin(r, 0)
        draw.text((x0, y0 - TEXT_H), f"{r + 1}. {query}", fill=(0, 0, 0), font=_font())
        for c, (frame, mark) in enumerate(zip(row, marks)):
            x, y = thumbnail_origin(r, c)
            thumb = Image.fromarray(np.asarray(frame, np.uint8)).resize(
                (SHEET_THUMB, SHEET_THUMB), Image.NEAREST)
            sheet.paste(thumb, (x, y))
            if mark:
                for k in range(SHEET_BORDER):
                    draw.rectangle([x + k, y + k, x + SHEET_THUMB - 1 - k, y + SHEET_THUMB - 1 - k],
                                   outline=RIGHT_COLOUR)
    sheet.save(path)
