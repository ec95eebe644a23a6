"""AVA-style spatio-temporal action detection data: annotation readers, keyframe examples, clips.

Conventions:
  boxes      [x1, y1, x2, y2]. In files and sources: normalised to [0, 1] by the frame's
             displayed width and height. In clips: pixels of the clip's frames, continuous edges
             (pixel column i spans [i, i + 1)), so x -> x * W maps a normalised box exactly.
  timestamps AVA keyframes are whole seconds of the movie (902..1798 of its 15-minute segment at
             1 Hz); KeyframeSource's time_offset is the movie second at the stream's first frame
             (0 for whole movies, 900 for the 15-minute cuts SlowFast makes), and a keyframe's
             frame is the one the stream shows at `timestamp - time_offset` seconds (by its
             presentation timestamps: the stream's own frame rate, whatever it is).
  labels     multi-hot (N, K) float32 over a class list (action ids, the label map's order).

Files (AVA v2.2; no header rows):
  ground truth  `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`: a person with several
                actions has one row per action, with the same box and person id;
  detections    `video_id,timestamp,x1,y1,x2,y2,action_id,score`: a person detector leaves
                action_id empty (one row per box); a per-class result file writes one row per
                (box, class);
  exclusions    `video_id,timestamp`: keyframes to leave out;
  label map     pbtxt of `label { name: "..." label_id: N ... }` (or `item { name id }`) blocks.
read_label_map here is a minimal parser for the class list; the evaluator
(internvideo_jax/detection/ava_eval.py) has its own, and one of the two should go.

The reference is VideoMAE's AVA fine-tuning (MCG-NJU/VideoMAE-Action-Detection, AlphAction code):
  - clip: FRAME_NUM 16 frames FRAME_SAMPLE_RATE 4 apart, from 25 fps re-encodes (AlphAction's
    tools/ava/process_ava_videos.py: targ_fps=25, short side 360) of 64 frames around the
    keyframe, 32 before it and 32 from it on; TemporalCrop takes frames 1, 5, ..., 61 of those, so
    the keyframe (frame 32) is not among them: offsets -31, ..., -3, +1, ..., +29. Here (as
    SlowFast's get_sequence) the keyframe is frame num_frames // 2 of the clip: offsets
    -32, ..., 0, ..., +28, one frame earlier;
  - training (data/transforms.py, alphaction/dataset/transforms/video_transforms.py): Resize
    (short side 256; its long-side cap MAX_SIZE 464 is commented out there, AlphAction's own
    applies it), RandomClip (a 224 x 224 window at a uniform whole-pixel position; boxes cropped
    and clamped, none dropped, not even empty ones), HSV colour jitter (not done here),
    RandomHorizontalFlip(0.5); the boxes are jittered (BoxList.random_aug(0.2, 0.1, 0.1, 0.05),
    in modeling_finetune.py's sample_box) for the RoI head;
  - test: Resize (short side 256, no cap), the whole frame, no crop, so frames of other aspect
    ratios give other shapes (16:9: 455 x 256); the detected boxes (AlphAction's, kept at score
    >= TEST.BOX_THRESH 0.8) enlarged by BoxList.extend((0.1, 0.05)) for the RoI head; the
    position embedding is interpolated to the frame's token grid.
Here evaluation batches need one shape: the whole frame goes top-left into a fixed canvas, the
short side resized to 256 (crop_size 224) unless the long side would pass AlphAction's 464, then
the long side to 464; 16:9 and 4:3 frames come out as the reference's, wider ones (2.35:1)
smaller than its (464 x 197, not 601 x 256). Raise eval_max_side for those, at the cost of more
padding.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import re
from collections.abc import Iterable, Sequence

import av
import numpy as np

from input_pipelines import decode, sampling, transforms


class AVAFileError(ValueError):
    """An AVA annotation file that cannot be read; the message names the file and the line."""


# --- Files --------------------------------------------------------------------------------------

def _fields(path: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, stripped fields) of each non-blank CSV row."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            row = [v.strip() for v in row]
            if any(row):
                yield reader.line_num, row


def _timestamp(text: str, where: str) -> int:
    if not text.isdigit():
        raise AVAFileError(f"{where}: timestamp {text!r} is not a whole number of seconds")
    return int(text)


def _box(values: list[str], where: str) -> tuple[float, float, float, float]:
    """A normalised [x1, y1, x2, y2] with 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1."""
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except ValueError:
        raise AVAFileError(f"{where}: box {values} is not 4 numbers") from None
    if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
        raise AVAFileError(f"{where}: box {values} is not [x1, y1, x2, y2] with "
                           f"0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 (normalised)")
    return x1, y1, x2, y2


def _int_or_none(text: str, what: str, where: str) -> int | None:
    """An integer column; None where it is empty or -1."""
    if text in ("", "-1"):
        return None
    if not text.isdigit():
        raise AVAFileError(f"{where}: {what} {text!r} is not a non-negative integer")
    return int(text)


def read_boxes(path: str, detections: bool = False) -> dict[tuple[str, int], dict]:
    """The boxes of every keyframe in an AVA CSV, rows of one box merged.

    Ground truth (detections=False; 7 or 8 columns, person_id optional): rows with the same
    keyframe, coordinates and person id are one box. Per keyframe:
      boxes (N, 4) float32 normalised; actions: N tuples of action ids, ascending, distinct;
      person_ids (N,) int64 (-1 where the file has none).
    Detections (8 columns, the last a score): rows with the same keyframe and coordinates are one
    box, whatever their action columns. Per keyframe:
      boxes (N, 4) float32; scores (N,) float32, the highest of the box's rows; class_scores: N
      dicts {action_id: score} of the rows that name an action (empty for a person detector's).
    Boxes keep the order of their first rows. Keys: (video_id, timestamp seconds).
    Raises AVAFileError naming the file and line of a row that does not parse.
    """
    merged: dict[tuple[str, int], dict[tuple, dict]] = collections.defaultdict(dict)
    for n, row in _fields(path):
        where = f"{path}:{n}"
        if len(row) not in ((8,) if detections else (7, 8)):
            raise AVAFileError(f"{where}: {len(row)} columns; expected video_id,timestamp,x1,y1,"
                               f"x2,y2,action_id,{'score' if detections else 'person_id'}")
        key = (row[0], _timestamp(row[1], where))
        box = _box(row[2:6], where)
        action = _int_or_none(row[6], "action_id", where)
        if detections:
            try:
                score = float(row[7])
            except ValueError:
                raise AVAFileError(f"{where}: score {row[7]!r} is not a number") from None
            entry = merged[key].setdefault(box, {"score": score, "classes": {}})
            entry["score"] = max(entry["score"], score)
            if action is not None:
                entry["classes"][action] = max(score, entry["classes"].get(action, score))
        else:
            person = _int_or_none(row[7] if len(row) == 8 else "", "person_id", where)
            entry = merged[key].setdefault(box + (-1 if person is None else person,), set())
            if action is None:
                raise AVAFileError(f"{where}: a ground-truth row without an action_id")
            entry.add(action)
    return {key: (_detection_entry(boxes) if detections else _truth_entry(boxes))
            for key, boxes in merged.items()}


def _truth_entry(boxes: dict[tuple, set]) -> dict:
    return {"boxes": np.asarray([k[:4] for k in boxes], np.float32).reshape(-1, 4),
            "actions": [tuple(sorted(a)) for a in boxes.values()],
            "person_ids": np.asarray([k[4] for k in boxes], np.int64)}


def _detection_entry(boxes: dict[tuple, dict]) -> dict:
    return {"boxes": np.asarray(list(boxes), np.float32).reshape(-1, 4),
            "scores": np.asarray([e["score"] for e in boxes.values()], np.float32),
            "class_scores": [dict(sorted(e["classes"].items())) for e in boxes.values()]}


def read_exclusions(path: str) -> set[tuple[str, int]]:
    """The (video_id, timestamp) keyframes of an excluded-timestamps CSV."""
    out = set()
    for n, row in _fields(path):
        if len(row) != 2:
            raise AVAFileError(f"{path}:{n}: {len(row)} columns; expected video_id,timestamp")
        out.add((row[0], _timestamp(row[1], f"{path}:{n}")))
    return out


_PBTXT_FIELD = re.compile(r'^\s*(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')


def read_label_map(path: str) -> list[tuple[int, str]]:
    """(class id, name) of each block of an AVA label map pbtxt, in file order.

    A minimal parser of the two layouts in use: `label { name: "..." label_id: N ... }` (AVA's
    action lists) and `item { name: "..." id: N }` (the TF object detection API's); other fields
    are ignored. Raises AVAFileError at a block without a name or an id, or a repeated id.
    """
    out, block, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.endswith("{"):
                block, start = {}, n
            elif text == "}":
                if block is None or "name" not in block or "id" not in block:
                    raise AVAFileError(f"{path}:{start}: a label block without a name and an id")
                if any(block["id"] == i for i, _ in out):
                    raise AVAFileError(f"{path}:{start}: class id {block['id']} repeats")
                out.append((block["id"], block["name"]))
                block = None
            elif block is not None and (m := _PBTXT_FIELD.match(text)):
                key, quoted, plain = m.groups()
                if key == "name":
                    block["name"] = quoted if quoted is not None else plain
                elif key in ("id", "label_id"):
                    if plain is None or not plain.isdigit():
                        raise AVAFileError(f"{path}:{n}: {key} {plain or quoted!r} is not a "
                                           f"non-negative integer")
                    block["id"] = int(plain)
    return out


def multi_hot(actions: Sequence[Iterable[int]], classes: Sequence[int]) -> np.ndarray:
    """(N, K) float32: entry [n, k] is 1 where box n has action classes[k]. Action ids outside
    `classes` are left out (AVA trains on 80 classes, evaluates 60)."""
    column = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(actions), len(classes)), np.float32)
    for n, ids in enumerate(actions):
        for a in ids:
            if a in column:
                out[n, column[a]] = 1.0
    return out


# --- The keyframe source ------------------------------------------------------------------------

def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def video_ids_of(video_source) -> list[str]:
    """The video_id of each example of a video source: from a file list's records without
    reading a file, else by reading every example (a pass over a packed dataset's bytes)."""
    records = getattr(video_source, "records", None)
    if records is not None:
        return [str(r["video_id"]) for r in records]
    return [_text(video_source[i]["video_id"]) for i in range(len(video_source))]


class KeyframeSource:
    """One example per keyframe, over a random-access source of whole movies (TFDS, file list):
    each movie is stored once and a keyframe is a (video index, timestamp) pair.

    [i] -> the movie's example (video bytes, video_id, fps, ...) plus
      index: i; timestamp: int seconds of the movie; keyframe_time: float seconds of the stream
      (timestamp - time_offset); boxes (N, 4) float32 normalised; labels (N, K) float32 multi-hot
      over `classes` (zeros for detections: a detector names no action); scores (N,) float32 (1
      for ground truth, the detector's score otherwise).

    boxes: read_boxes' dict, ground truth or detections (those carry scores). With min_score, a
    detection scored below it is left out, and so is a keyframe left with no box (as AlphAction's
    test set). Keyframes in `exclusions` are left out. Keyframes are in (video_id, timestamp)
    order: `keyframes[i]` is example i's (video_id, timestamp).
    video_ids: the video_id of each example of video_source, when known (else video_ids_of).
    Raises ValueError when a keyframe's movie is not in the source, or min_score is given for
    ground truth.
    """

    def __init__(self, video_source, boxes: dict[tuple[str, int], dict], classes: Sequence[int],
                 *, exclusions: Iterable[tuple[str, int]] = (), time_offset: float = 0.0,
                 min_score: float | None = None, video_ids: Sequence[str] | None = None):
        self.videos = video_source
        self.classes = list(classes)
        self.time_offset = float(time_offset)
        ids = list(video_ids) if video_ids is not None else video_ids_of(video_source)
        if len(ids) != len(video_source):
            raise ValueError(f"{len(ids)} video ids for a source of {len(video_source)} videos")
        self._video_index = {v: i for i, v in enumerate(ids)}
        excluded = set(exclusions)
        self.keyframes: list[tuple[str, int]] = []
        self._entries: list[dict] = []
        for key in sorted(boxes):
            entry = boxes[key]
            if key in excluded:
                continue
            if min_score is not None:
                if "scores" not in entry:
                    raise ValueError(f"min_score is for detections (read_boxes(..., "
                                     f"detections=True)); keyframe {key} has ground truth")
                keep = entry["scores"] >= min_score
                if not keep.any():
                    continue
                entry = {"boxes": entry["boxes"][keep], "scores": entry["scores"][keep]}
            self.keyframes.append(key)
            self._entries.append(entry)
        missing = sorted({v for v, _ in self.keyframes if v not in self._video_index})
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise ValueError(f"{len(missing)} movies with keyframes are not in the video source "
                             f"of {len(ids)} videos: {missing[:5]}{more}. Leave their keyframes "
                             f"out of `boxes`, or add the movies.")

    def __len__(self) -> int:
        return len(self.keyframes)

    def describe(self, index: int) -> str:
        """'<the movie's name>@<timestamp>' (for error reports)."""
        video_id, timestamp = self.keyframes[index]
        describe = getattr(self.videos, "describe", None)
        name = describe(self._video_index[video_id]) if describe else video_id
        return f"{name}@{timestamp}"

    def boxes(self, index: int) -> np.ndarray:
        """(N, 4) normalised boxes of keyframe `index`, without reading its movie."""
        return np.asarray(self._entries[index]["boxes"], np.float32).reshape(-1, 4)

    def __getitem__(self, index: int) -> dict:
        video_id, timestamp = self.keyframes[index]
        entry = self._entries[index]
        n = len(entry["boxes"])
        if "actions" in entry:
            labels, scores = multi_hot(entry["actions"], self.classes), np.ones(n, np.float32)
        else:
            labels, scores = np.zeros((n, len(self.classes)), np.float32), entry["scores"]
        example = dict(self.videos[self._video_index[video_id]])
        example.update(index=int(index), timestamp=int(timestamp),
                       keyframe_time=timestamp - self.time_offset, boxes=entry["boxes"],
                       labels=labels, scores=scores)
        return example


# --- Clips --------------------------------------------------------------------------------------

def keyframe_indices(times: np.ndarray, keyframe_time: float, num_frames: int, rate: int,
                     sample_fps: float = 0.0) -> np.ndarray:
    """(num_frames,) int64 frame indices of a clip around a keyframe, the keyframe's frame at
    position num_frames // 2.

    times: (F,) seconds of the frames (decode.Video.times); keyframe_time: seconds. The
    keyframe's frame is the one shown at keyframe_time (sampling.frames_at_times). Frames are
    `rate` frames apart, or with sample_fps > 0 the ones shown 1 / sample_fps seconds apart
    (mixed frame rates: the reference's 25 fps at rate 4 is sample_fps 6.25). Indices before the
    first frame or past the last repeat it (clamped).
    """
    offsets = np.arange(num_frames) - num_frames // 2
    if sample_fps:
        return sampling.frames_at_times(times, keyframe_time + offsets / sample_fps)
    centre = int(sampling.frames_at_times(times, [keyframe_time])[0])
    return np.clip(centre + offsets * rate, 0, len(times) - 1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class View:
    """Where a clip's pixels come from: the frame resized to `resized` (w, h), the window of
    `size` (w, h) at `offset` (x, y) of the resized frame (parts outside it are zeros), mirrored
    left-right when `flip`. Pixels."""

    resized: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    flip: bool = False

    @property
    def image_box(self) -> np.ndarray:
        """[x1, y1, x2, y2] of the window that shows the frame (not padding), output pixels."""
        (rw, rh), (cx, cy), (w, h) = self.resized, self.offset, self.size
        x1, x2 = max(0, -cx), min(w, rw - cx)
        if self.flip:
            x1, x2 = w - x2, w - x1
        return np.array([x1, max(0, -cy), x2, min(h, rh - cy)], np.float32)


def train_view(width: int, height: int, crop_size: int, scale_range: tuple[float, float],
               flip: bool, rng: np.random.Generator) -> View:
    """A training view: the short side resized to round(crop_size * s), s uniform in
    scale_range, a crop_size^2 window at a uniform whole-pixel position, flipped with probability
    0.5 when `flip`. Draws s, x, y, then the flip."""
    short = max(crop_size, int(round(crop_size * rng.uniform(*scale_range))))
    rw, rh = transforms.short_side_size(width, height, short)
    x = int(rng.integers(0, rw - crop_size + 1))
    y = int(rng.integers(0, rh - crop_size + 1))
    return View((rw, rh), (x, y), (crop_size, crop_size), bool(flip and rng.random() < 0.5))


def eval_view(width: int, height: int, short_side: int, max_side: int,
              canvas: tuple[int, int]) -> View:
    """The evaluation view: the whole frame, resized by AlphAction's rule (the short side to
    short_side unless the long side would pass max_side, then the long side to max_side; also
    kept inside the canvas, which only portrait frames need), at the top-left of a canvas of
    (w, h) pixels, zeros elsewhere."""
    cw, ch = canvas
    scale = min(short_side / min(width, height), max_side / max(width, height), cw / width,
                ch / height)
    resized = (min(cw, int(round(width * scale))), min(ch, int(round(height * scale))))
    return View(resized, (0, 0), canvas)


def render_view(frames: list[av.VideoFrame], view: View) -> np.ndarray:
    """(T, h, w, 3) uint8: the frames through a view (swscale BILINEAR resize, window, flip)."""
    (rw, rh), (cx, cy), (w, h) = view.resized, view.offset, view.size
    out = np.zeros((len(frames), h, w, 3), np.uint8)
    x1, y1, x2, y2 = max(0, cx), max(0, cy), min(rw, cx + w), min(rh, cy + h)
    for t, frame in enumerate(frames):
        rgb = decode.to_rgb(frame, rw, rh, "BILINEAR")
        out[t, y1 - cy:y2 - cy, x1 - cx:x2 - cx] = rgb[y1:y2, x1:x2]
    return out[:, :, ::-1] if view.flip else out


def view_boxes(boxes: np.ndarray, view: View) -> np.ndarray:
    """(N, 4) normalised boxes -> output pixels of the view (scaled with the frame, shifted by
    the window, mirrored x -> w - x with x1 and x2 swapped when flipped), not clipped."""
    (rw, rh), (cx, cy), (w, _) = view.resized, view.offset, view.size
    out = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([rw, rh, rw, rh], np.float32)
    out -= np.array([cx, cy, cx, cy], np.float32)
    if view.flip:
        out = np.stack([w - out[:, 2], out[:, 1], w - out[:, 0], out[:, 3]], axis=1)
    return out


def clip_boxes(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) clipped to a region [x1, y1, x2, y2]."""
    lo, hi = np.tile(region[:2], 2), np.tile(region[2:], 2)
    return np.clip(boxes, lo, hi)


def area(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) boxes; 0 for empty ones."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def jitter_boxes(boxes: np.ndarray, jitter: tuple[float, float, float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """AlphAction's BoxList.random_aug(x_out, x_in, y_out, y_in): each side moved by a uniform
    fraction of the box's width (x) or height (y), up to `out` outwards and `in` inwards:
    x1 += w U(-x_out, x_in), x2 += w U(-x_in, x_out), y likewise. Boxes (N, 4) pixels."""
    x_out, x_in, y_out, y_in = jitter
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    n = len(boxes)
    return np.stack([boxes[:, 0] + w * rng.uniform(-x_out, x_in, n),
                     boxes[:, 1] + h * rng.uniform(-y_out, y_in, n),
                     boxes[:, 2] + w * rng.uniform(-x_in, x_out, n),
                     boxes[:, 3] + h * rng.uniform(-y_in, y_out, n)], axis=1).astype(np.float32)


def extend_boxes(boxes: np.ndarray, extend: tuple[float, float]) -> np.ndarray:
    """AlphAction's BoxList.extend((x, y)): each box widened by x times its width and heightened
    by y times its height, half on each side. Boxes (N, 4) pixels."""
    pad = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) \
        * np.asarray(extend, np.float32) / 2
    return np.concatenate([boxes[:, :2] - pad, boxes[:, 2:] + pad], axis=1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class KeyframeClip:
    """A KeyframeSource example -> the clip around its keyframe and its boxes (module docstring:
    the reference's steps).

    Frames: num_frames, `rate` frames apart (or by time: sample_fps), centred on the keyframe
    (keyframe_indices). Training (train=True, called (example, rng) as train_stream's clips):
    train_view (short side crop_size x U(scale_range), a random crop_size^2 window, flip), the
    boxes through the same view, clipped to the window; boxes with less than min_visible of their
    area inside it are dropped, more than max_boxes leave a random max_boxes; then `jitter`
    (jitter_boxes; None: off), clipped again. Evaluation (train=False, called (example, index) as
    eval_dataset's views, nothing random): eval_view (the whole frame, short side eval_short_side
    unless the long side would pass eval_max_side, top-left in a canvas of eval_max_side x
    eval_short_side rounded up to pad_multiple), the boxes through it, then `eval_extend`
    (extend_boxes; None: off) and clipped to the frame; no box is dropped (more than max_boxes
    raise ValueError).

    Output (leading axis: one view):
      video (1, T, h, w, 3) uint8: training h = w = crop_size; evaluation the canvas (h, w);
      boxes (1, M, 4) float32 [x1, y1, x2, y2] output pixels (M = max_boxes), zeros past the
        boxes; box_mask (1, M) bool; labels (1, M, K) float32 multi-hot; scores (1, M) float32;
      image_size (1, 2) int32 (height, width) of the frame within the output (evaluation: the
        rest is padding); index (1,) int32, the KeyframeSource index;
      evaluation also: source_boxes (1, M, 4) float32, the boxes as read (normalised, not
        extended: what a result file reports).
    Defaults are the reference's for 224 px: 16 x 4 frames, short side 256 (scale 8 / 7), test
    short side 256 and long side <= 464, jitter (0.2, 0.1, 0.1, 0.05), test extension (0.1,
    0.05); SlowFast's AVA recipe takes scale_range (256 / 224, 320 / 224).
    """

    num_frames: int = 16
    rate: int = 4
    crop_size: int = 224
    max_boxes: int = 16
    num_classes: int = 80
    train: bool = True
    jitter: tuple[float, float, float, float] | None = (0.2, 0.1, 0.1, 0.05)
    flip: bool = True
    scale_range: tuple[float, float] = (8 / 7, 8 / 7)  # short side / crop_size, training
    min_visible: float = 0.1  # training: fraction of a box's area the crop must keep
    sample_fps: float = 0.0  # > 0: frames 1 / sample_fps seconds apart instead of `rate`
    eval_short_side: int = 0  # 0: round(crop_size x the middle of scale_range)
    eval_max_side: int = 0  # 0: round(eval short side x 464 / 256), the reference's cap
    eval_extend: tuple[float, float] | None = (0.1, 0.05)
    pad_multiple: int = 16  # the evaluation canvas' sides are multiples of it (the patch size)

    def __post_init__(self):
        lo, hi = self.scale_range
        if not 1 <= lo <= hi:
            raise ValueError(f"scale_range {self.scale_range} must be 1 <= low <= high: the "
                             f"short side is resized to crop_size x scale, at least the crop")

    @property
    def eval_sizes(self) -> tuple[int, int, tuple[int, int]]:
        """(short side, long side cap, canvas (w, h)) of evaluation, pixels."""
        short = self.eval_short_side or int(round(self.crop_size * sum(self.scale_range) / 2))
        longest = self.eval_max_side or int(round(short * 464 / 256))
        return short, longest, (_round_up(longest, self.pad_multiple),
                                _round_up(short, self.pad_multiple))

    def __call__(self, example: dict, rng_or_index) -> dict:
        labels = np.asarray(example["labels"], np.float32)
        if labels.shape[1] != self.num_classes:
            raise ValueError(f"keyframe {example['index']} has labels over {labels.shape[1]} "
                             f"classes; the clip was made for num_classes={self.num_classes}")
        with decode.Video(example["video"], int(example.get("num_frames", 0) or 0)) as video:
            t = float(example["keyframe_time"])
            if not 0 <= t <= video.duration:
                raise ValueError(f"keyframe {example['index']} is at {t:.3f} s of a "
                                 f"{video.duration:.3f} s video: is the time_offset right?")
            frames = video.frames(keyframe_indices(video.times, t, self.num_frames, self.rate,
                                                   self.sample_fps))
            width, height = decode.display_size(frames[0])
            if self.train:
                return self._train(example, labels, frames, width, height, rng_or_index)
            return self._eval(example, labels, frames, width, height, int(rng_or_index))

    def _train(self, example, labels, frames, width, height, rng) -> dict:
        view = train_view(width, height, self.crop_size, self.scale_range, self.flip, rng)
        region = view.image_box
        boxes = view_boxes(example["boxes"], view)
        clipped = clip_boxes(boxes, region)
        visible = area(clipped)
        keep = np.flatnonzero((visible > 0) & (visible >= self.min_visible * area(boxes)))
        if len(keep) > self.max_boxes:
            keep = np.sort(rng.choice(keep, self.max_boxes, replace=False))
        boxes = clipped[keep]
        if self.jitter is not None:
            boxes = clip_boxes(jitter_boxes(boxes, self.jitter, rng), region)
        scores = np.asarray(example["scores"], np.float32)[keep]
        return self._pack(render_view(frames, view), boxes, labels[keep], scores, view,
                          int(example["index"]))

    def _eval(self, example, labels, frames, width, height, index) -> dict:
        short, longest, canvas = self.eval_sizes
        view = eval_view(width, height, short, longest, canvas)
        source = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
        if len(source) > self.max_boxes:
            raise ValueError(f"keyframe {index} has {len(source)} boxes, more than max_boxes="
                             f"{self.max_boxes}: evaluation keeps every box; raise max_boxes")
        boxes = view_boxes(source, view)
        if self.eval_extend is not None:
            boxes = extend_boxes(boxes, self.eval_extend)
        out = self._pack(render_view(frames, view), clip_boxes(boxes, view.image_box), labels,
                         np.asarray(example["scores"], np.float32), view, index)
        out["source_boxes"] = self._padded(source, (4,))[None]
        return out

    def _padded(self, values: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
        out = np.zeros((self.max_boxes, *tail), np.float32)
        out[:len(values)] = values
        return out

    def _pack(self, video, boxes, labels, scores, view: View, index: int) -> dict:
        n = len(boxes)
        box_mask = np.zeros(self.max_boxes, bool)
        box_mask[:n] = True
        region = view.image_box
        return {"video": np.ascontiguousarray(video)[None],
                "boxes": self._padded(boxes, (4,))[None],
                "box_mask": box_mask[None],
                "labels": self._padded(labels, (self.num_classes,))[None],
                "scores": self._padded(scores, ())[None],
                "image_size": np.asarray([[region[3] - region[1], region[2] - region[0]]],
                                         np.int32),
                "index": np.asarray([index], np.int32)}

    def blank(self, index: int) -> dict:
        """What evaluation returns, in zeros, for a keyframe whose video could not be loaded."""
        _, _, (cw, ch) = self.eval_sizes
        m, k = self.max_boxes, self.num_classes
        return {"video": np.zeros((1, self.num_frames, ch, cw, 3), np.uint8),
                "boxes": np.zeros((1, m, 4), np.float32), "box_mask": np.zeros((1, m), bool),
                "labels": np.zeros((1, m, k), np.float32), "scores": np.zeros((1, m), np.float32),
                "image_size": np.zeros((1, 2), np.int32), "index": np.asarray([index], np.int32),
                "source_boxes": np.zeros((1, m, 4), np.float32)}
