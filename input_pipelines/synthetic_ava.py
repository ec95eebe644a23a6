"""An embedded spatio-temporal action detection dataset in the AVA format, as real H.264 mp4.

Each video (6-8 s at 25 fps by default, 112 x 112 pixels) shows two or three shapes over a smooth
background (synthetic_untrimmed's). Every shape performs one or two of the 8 motions of
synthetic_videos.CLASSES at once, for the whole video: one class of one or two of the groups
translation (moving left / right / up / down), rotation (clockwise / counterclockwise; never for
a circle) and size change (growing / shrinking). A shape's labels are therefore multi-label, as
an AVA person's pose + interaction actions are. Shapes never overlap: their circumcircles stay 2
pixels apart at every frame, and every shape stays 1.5 pixels inside the frame.

Speeds are lower than the trimmed clips' so that a motion lasts the whole video: moving 0.6-1.0 x
the room the path has divided by the video's frames (>= 0.2 pixels / frame; 0.25-0.6 at the
default size: 16-37 pixels over the 64 frames an AVA clip of 16 frames 4 apart spans), rotating
3-6 degrees / frame (at most 24 degrees between frames 4 apart: below half a hexagon's 60-degree
symmetry), growing and shrinking by 0.6-1.0 x the rate that takes the radius across
[0.05, 0.15] x size over the video (0.3-0.7 % / frame at the default durations).

Annotations, as AVA v2.2 writes them (input_pipelines/ava.py reads them):
  keyframes  every second, t = 1, 2, ... while frame t * fps exists (AVA: 902..1798 of a movie);
  rows       `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`, one per (shape, action) at a
             keyframe; the box is the extent of the pixels the shape covers at frame t * fps,
             normalised to [0, 1] by the frame size, 3 decimals; action_id is the class index
             + 1 (1..8, the label map's ids); person_id is the shape's index;
  label map  label_map.pbtxt, AVA's `label { name: ... label_id: ... label_type: ... }` blocks;
  exclusions an empty excluded-timestamps CSV per split;
  detections (validation) the ground-truth boxes with each side moved by up to 4 % of the box's
             size and a score in [0.85, 1), plus, at a quarter of the keyframes, a box at a random
             place scored below 0.75 (a false detection the usual 0.8 threshold drops): rows
             `video_id,timestamp,x1,y1,x2,y2,,score` standing in for a person detector's.

Everything, down to the bytes of each mp4 and of each file, is a deterministic function of the
config (seed, index).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from input_pipelines import ava, generated
from input_pipelines.synthetic_untrimmed import _DIRECTIONS, _apply, _background
from input_pipelines.synthetic_videos import (CLASSES, COLOURS, SHAPES, _CAPTION_VERB,
                                              _shape_mask, encode_mp4)

# White is left out: the background's brightest shading comes within ~40 RGB levels of it.
SHAPE_COLOURS = tuple(c for c in COLOURS if c != "white")
# Motion groups: a shape performs at most one class of each, and one or two groups in all.
TRANSLATIONS = tuple(CLASSES.index(c) for c in _DIRECTIONS)
ROTATIONS = (CLASSES.index("rotating clockwise"), CLASSES.index("rotating counterclockwise"))
SIZE_CHANGES = (CLASSES.index("growing"), CLASSES.index("shrinking"))
# Radii (circumradius), fractions of the frame size; pixels kept to the frame's edge and between
# two shapes' circumcircles.
_MIN_RADIUS, _MAX_RADIUS = 0.05, 0.15
_EDGE_MARGIN, _SHAPE_GAP = 1.5, 2.0
_MIN_SPEED = 0.2  # pixels / frame
_ROTATION_SPEED = (3.0, 6.0)  # degrees / frame
_PLACEMENT_TRIES = 60
ACTION_IDS = tuple(range(1, len(CLASSES) + 1))  # the label map's ids: class index + 1

# The embedded AVA-style dataset, by config name: videos per split, frame size (pixels), frame rate
# (frames / second), durations (seconds).
AVA_CONFIGS = {
    "default": dict(num_train=100, num_validation=30, size=112, fps=25, min_seconds=6,
                    max_seconds=8, seed=0),
    # A few short videos, for tests.
    "small": dict(num_train=6, num_validation=3, size=112, fps=25, min_seconds=6, max_seconds=6,
                  seed=1),
}
SPLITS = ("train", "validation")
DETECTION_THRESHOLD = 0.8  # the reference's TEST.BOX_THRESH


@dataclasses.dataclass(frozen=True)
class ShapeTrack:
    """One shape and its motions, for the whole video."""

    shape: str
    colour: str
    centre: tuple[float, float]  # (y, x) pixels, at the first frame
    radius: float  # circumradius, pixels, at the first frame
    angle: float  # degrees, at the first frame
    labels: tuple[int, ...]  # indices into CLASSES, ascending
    rates: tuple[float, ...]  # per label: pixels, degrees or relative radius change per frame

    def trajectory(self, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres (T, 2) (y, x) pixels, radii (T,) pixels and angles (T,) degrees per frame."""
        steps = np.arange(num_frames)
        centres = np.tile(np.asarray(self.centre, np.float64), (num_frames, 1))
        radii = np.full(num_frames, self.radius)
        angles = np.full(num_frames, self.angle)
        for label, rate in zip(self.labels, self.rates):
            centres, radii, angles = _apply(CLASSES[label], rate, steps, centres, radii, angles)
        return centres, radii, angles

    @property
    def caption(self) -> str:
        """E.g. 'a red square moves to the left and rotates clockwise'."""
        verbs = " and ".join(_CAPTION_VERB[CLASSES[c]] for c in self.labels)
        return f"a {self.colour} {self.shape} {verbs}"


@dataclasses.dataclass(frozen=True)
class AVAPlan:
    """Everything about one video except its random background and sensor noise."""

    num_frames: int
    fps: int
    size: int  # pixels, square frames
    background: tuple[int, int, int]  # RGB before shading
    tracks: tuple[ShapeTrack, ...]

    @property
    def keyframes(self) -> list[int]:
        """Keyframe timestamps, seconds: 1, 2, ... while frame t * fps exists."""
        return list(range(1, (self.num_frames - 1) // self.fps + 1))

    @property
    def caption(self) -> str:
        return ", ".join(t.caption for t in self.tracks)


def extent(shape: str, centre, radius: float, angle: float) -> np.ndarray:
    """[x1, y1, x2, y2] pixels: the extent of the shape _shape_mask draws (a circle's, or its
    polygon's vertices at angle + 360 k / sides degrees, radius pixels from the centre)."""
    cy, cx = centre
    sides = SHAPES[shape]
    if sides == 0:
        return np.array([cx - radius, cy - radius, cx + radius, cy + radius])
    theta = np.deg2rad(angle) + 2 * np.pi * np.arange(sides) / sides
    xs, ys = cx + radius * np.cos(theta), cy + radius * np.sin(theta)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def _radius_and_rate(rng: np.random.Generator, label: int | None, size: int,
                     num_frames: int) -> tuple[float, float]:
    """(first radius, rate) of a size change `label` (None: no size change, rate 0) that keeps
    the radius in [_MIN_RADIUS, _MAX_RADIUS] x size over the video."""
    lo, hi = _MIN_RADIUS * size, _MAX_RADIUS * size
    if label is None:
        return float(rng.uniform(1.4 * lo, 0.9 * hi)), 0.0
    steps = num_frames - 1
    if CLASSES[label] == "growing":
        radius = float(rng.uniform(lo, 1.2 * lo))
        return radius, float(rng.uniform(0.6, 1.0) * ((hi / radius) ** (1 / steps) - 1))
    radius = float(rng.uniform(0.85 * hi, hi))
    return radius, float(rng.uniform(0.6, 1.0) * (1 - (lo / radius) ** (1 / steps)))


def _sample_track(rng: np.random.Generator, colour: str, size: int,
                  num_frames: int) -> ShapeTrack | None:
    """One shape with one or two motion groups whose path stays inside the frame; None when the
    drawn radius leaves a translation too little room for a visible speed."""
    shape = list(SHAPES)[int(rng.integers(len(SHAPES)))]
    groups = [TRANSLATIONS, SIZE_CHANGES] + ([ROTATIONS] if SHAPES[shape] else [])
    picked = rng.choice(len(groups), size=int(rng.integers(1, 3)), replace=False)
    labels = sorted(int(groups[g][int(rng.integers(len(groups[g])))]) for g in picked)
    size_label = next((c for c in labels if c in SIZE_CHANGES), None)
    radius, size_rate = _radius_and_rate(rng, size_label, size, num_frames)
    growing = size_label is not None and CLASSES[size_label] == "growing"
    peak = radius * (1 + size_rate) ** (num_frames - 1) if growing else radius  # largest radius
    low, high = peak + _EDGE_MARGIN, size - peak - _EDGE_MARGIN
    centre = rng.uniform(low, high, size=2)  # (y, x)
    rates = []
    for label in labels:
        cls = CLASSES[label]
        if label in TRANSLATIONS:
            speed = float(rng.uniform(0.6, 1.0) * (high - low) / (num_frames - 1))
            if speed < _MIN_SPEED:
                return None
            dy, dx = _DIRECTIONS[cls]
            axis, sign = (0, dy) if dy else (1, dx)
            travel = speed * (num_frames - 1)
            start = rng.uniform(low, high - travel)
            centre[axis] = start if sign > 0 else size - start
            rates.append(speed)
        elif label in ROTATIONS:
            rates.append(float(rng.uniform(*_ROTATION_SPEED)))
        else:
            rates.append(size_rate)
    return ShapeTrack(shape, colour, (float(centre[0]), float(centre[1])), radius,
                      float(rng.uniform(0, 360)), tuple(labels), tuple(rates))


def _apart(a: ShapeTrack, b: ShapeTrack, num_frames: int) -> bool:
    """Whether two shapes' circumcircles stay _SHAPE_GAP pixels apart at every frame."""
    ca, ra, _ = a.trajectory(num_frames)
    cb, rb, _ = b.trajectory(num_frames)
    return bool(np.all(np.linalg.norm(ca - cb, axis=1) >= ra + rb + _SHAPE_GAP))


def sample_plan(rng: np.random.Generator, size: int = 112, fps: int = 25,
                min_seconds: float = 6, max_seconds: float = 8) -> AVAPlan:
    """Draw one video: 2 or 3 shapes of distinct colours, placed one after another (each drawn
    until it keeps apart from those placed, up to _PLACEMENT_TRIES draws; a third that does not
    fit is left out, a second that does not fit raises)."""
    num_frames = int(round(rng.uniform(min_seconds, max_seconds) * fps))
    count = int(rng.integers(2, 4))
    colours = rng.choice(len(SHAPE_COLOURS), size=count, replace=False)
    tracks: list[ShapeTrack] = []
    for k in range(count):
        for _ in range(_PLACEMENT_TRIES):
            track = _sample_track(rng, SHAPE_COLOURS[int(colours[k])], size, num_frames)
            if track is not None and all(_apart(track, t, num_frames) for t in tracks):
                tracks.append(track)
                break
        else:
            if k < 2:
                raise RuntimeError(f"no room for shape {k + 1} in a {size} px frame after "
                                   f"{_PLACEMENT_TRIES} draws")
            break
    background = tuple(int(v) for v in rng.integers(60, 120, size=3))
    return AVAPlan(num_frames, fps, size, background, tuple(tracks))


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) pixel centres of a size x size frame, pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def shape_pixels(track: ShapeTrack, centre, radius: float, angle: float, yy: np.ndarray,
                 xx: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """(window, mask): the pixels whose centres the shape covers, as a boolean mask over the
    window (y, x slices) of the frame around its extent (no pixel outside it is covered)."""
    x1, y1, x2, y2 = extent(track.shape, centre, radius, angle)
    win = (slice(max(0, int(y1)), int(np.ceil(y2)) + 1),
           slice(max(0, int(x1)), int(np.ceil(x2)) + 1))
    return win, _shape_mask(yy[win], xx[win], SHAPES[track.shape], tuple(centre), radius, angle)


def render(plan: AVAPlan, rng: np.random.Generator) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 RGB; `rng` draws the background and the sensor noise."""
    size = plan.size
    base = _background(rng, size, plan.background)
    yy, xx = _pixel_grid(size)
    states = [t.trajectory(plan.num_frames) for t in plan.tracks]
    frames = np.empty((plan.num_frames, size, size, 3), np.uint8)
    for f in range(plan.num_frames):
        frame = base.copy()
        for track, (centres, radii, angles) in zip(plan.tracks, states):
            win, mask = shape_pixels(track, centres[f], radii[f], angles[f], yy, xx)
            frame[win][mask] = COLOURS[track.colour]
        noise = rng.normal(0, 1, size=(size, size, 1))  # per-frame sensor noise
        frames[f] = np.clip(frame + noise, 0, 255).astype(np.uint8)
    return frames


def annotation_rows(plan: AVAPlan) -> np.ndarray:
    """(N, 7) float32 rows [timestamp s, x1, y1, x2, y2 (normalised), action_id, person_id]: one
    per (keyframe, shape, action), by keyframe, then shape, then action. The box is the extent of
    the pixels the shape covers at the keyframe's frame (pixel edges: [first column, last column
    + 1] / size), as an annotator draws around what is visible."""
    rows = []
    yy, xx = _pixel_grid(plan.size)
    states = [t.trajectory(plan.num_frames) for t in plan.tracks]
    for ts in plan.keyframes:
        frame = ts * plan.fps
        for person, (track, (centres, radii, angles)) in enumerate(zip(plan.tracks, states)):
            (ys, xs), mask = shape_pixels(track, centres[frame], radii[frame], angles[frame],
                                          yy, xx)
            rows_in, cols_in = np.nonzero(mask)
            box = np.array([xs.start + cols_in.min(), ys.start + rows_in.min(),
                            xs.start + cols_in.max() + 1, ys.start + rows_in.max() + 1])
            rows.extend([ts, *(box / plan.size), label + 1, person] for label in track.labels)
    return np.asarray(rows, np.float32).reshape(-1, 7)


def make_example(seed: int, index: int, size: int = 112, fps: int = 25, min_seconds: float = 6,
                 max_seconds: float = 8) -> dict:
    """One encoded video with its AVA rows and metadata; deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    plan = sample_plan(rng, size, fps, min_seconds, max_seconds)
    frames = render(plan, rng)
    return {
        "video": encode_mp4(frames, fps=fps),
        "video_id": f"ava_demo_{seed}_{index:05d}",
        "num_frames": plan.num_frames,
        "fps": float(fps),
        "duration": plan.num_frames / fps,
        "label": -1,
        "caption": plan.caption,
        "ava_rows": annotation_rows(plan),
    }


class DemoAva(generated.GeneratedVideos):
    """Synthetic AVA-style videos (H.264 mp4): 2-3 shapes, each performing one or two of the 8
    motion classes of DemoVideos for the whole video (synthetic_ava).

    ava_rows: (N, 7) float32 [timestamp s, x1, y1, x2, y2 normalised, action_id, person_id] (the
    AVA CSV's columns; write_files writes them out); label is -1. VERSION names the bytes a build
    writes (see sources.DemoVideos).
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in AVA_CONFIGS]
    CONFIGS = AVA_CONFIGS

    def features(self) -> dict:
        return generated.video_features(
            duration=generated.seconds(),
            ava_rows=tfds.features.Tensor(shape=(None, 7), dtype=np.float32))

    def make(self, seed: int, index: int, c: dict) -> dict:
        return make_example(seed, index, size=c["size"], fps=c["fps"],
                            min_seconds=c["min_seconds"], max_seconds=c["max_seconds"])


@contextlib.contextmanager
def _builder(config: str, data_dir: str | None):
    """The dataset's builder, generated on first use; the block runs under a lock on the data
    directory (as sources.demo_source's build does)."""
    from input_pipelines import sources  # sources routes 'demo_ava' here: imported on use
    if config not in AVA_CONFIGS:
        raise ValueError(f"Unknown demo_ava dataset config {config!r}; choose one of "
                         f"{sorted(AVA_CONFIGS)}.")
    data_dir = data_dir or sources.default_data_dir()
    lock = (contextlib.nullcontext() if "://" in data_dir
            else sources._exclusive(os.path.join(data_dir, f"demo_ava.{config}.lock")))
    with lock:
        builder = DemoAva(config=config, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
        yield builder


def videos(split: str, config: str = "default", data_dir: str | None = None):
    """The videos of a split ('train' or 'validation') as a random-access source, generated on
    first use (the default config: ~1 min on 2 cores)."""
    with _builder(config, data_dir) as builder:
        return builder.as_data_source(split)


FILE_NAMES = {
    "label_map": "label_map.pbtxt",
    "train": "train.csv",
    "validation": "validation.csv",
    "train_exclusions": "train_excluded_timestamps.csv",
    "validation_exclusions": "validation_excluded_timestamps.csv",
    "validation_detections": "validation_detections.csv",
}


def files(config: str = "default", data_dir: str | None = None) -> dict[str, str]:
    """Paths of the dataset's AVA-style files, by FILE_NAMES key, in an `ava` folder of the built
    dataset's version directory: ground truth per split, the label map, empty exclusions, the
    validation detections.

    Written once, from the built dataset's own records (so they always match the videos), under
    the dataset's lock, each to a temporary file renamed into place. A local data directory only.
    """
    with _builder(config, data_dir) as builder:
        folder = os.path.join(builder.data_dir, "ava")
        paths = {key: os.path.join(folder, name) for key, name in FILE_NAMES.items()}
        if not all(os.path.exists(p) for p in paths.values()):
            os.makedirs(folder, exist_ok=True)
            texts = {"label_map": label_map_text(), "train_exclusions": "",
                     "validation_exclusions": ""}
            for split in SPLITS:
                records = sorted(((_text(ex["video_id"]), ex["ava_rows"])
                                  for ex in builder.as_data_source(split)), key=lambda r: r[0])
                texts[split] = "".join(ground_truth_lines(vid, rows) for vid, rows in records)
                if split == "validation":
                    texts["validation_detections"] = "".join(
                        detection_lines(vid, rows) for vid, rows in records)
            for key, text in texts.items():
                _write(paths[key], text)
    return paths


def source(split: str, config: str = "default", data_dir: str | None = None, *,
           detections: bool | None = None, min_score: float = DETECTION_THRESHOLD):
    """The keyframes of a split as an ava.KeyframeSource over its videos: by default the ground
    truth boxes for 'train' and the detected boxes scored >= min_score for 'validation' (the AVA
    protocol: training on annotated boxes, evaluation on a detector's); `detections` chooses."""
    paths = files(config, data_dir)
    detections = split == "validation" if detections is None else detections
    if detections and split != "validation":
        raise ValueError(f"the demo_ava dataset has detections for 'validation' only, not "
                         f"{split!r}")
    box_path = paths["validation_detections"] if detections else paths[split]
    classes = [class_id for class_id, _ in ava.read_label_map(paths["label_map"])]
    return ava.KeyframeSource(
        videos(split, config, data_dir), ava.read_boxes(box_path, detections=detections), classes,
        exclusions=ava.read_exclusions(paths[f"{split}_exclusions"]),
        min_score=min_score if detections else None)


def label_map_text() -> str:
    """The 8 classes as AVA's label map pbtxt, ids 1..8 in CLASSES order."""
    return "".join(f'label {{\n  name: "{name}"\n  label_id: {i}\n'
                   f'  label_type: PERSON_MOVEMENT\n}}\n' for i, name in zip(ACTION_IDS, CLASSES))


def _coords(box) -> str:
    return ",".join(f"{float(v):.3f}" for v in box)


def ground_truth_lines(video_id: str, rows: np.ndarray) -> str:
    """AVA ground-truth CSV lines of one video's ava_rows (timestamps written %04d, as AVA's)."""
    return "".join(f"{video_id},{int(ts):04d},{_coords(box)},{int(action)},{int(person)}\n"
                   for ts, *box, action, person in np.asarray(rows).tolist())


def detection_lines(video_id: str, rows: np.ndarray) -> str:
    """Detection CSV lines (`video_id,timestamp,x1,y1,x2,y2,,score`) standing in for a person
    detector's on one video: each ground-truth box once, each side moved by up to 4 % of the box's
    size, scored in [0.85, 1); at a quarter of the keyframes a box of side 0.1-0.3 at random,
    scored in [0.2, 0.75). Deterministic in (video_id, rows)."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    rows = np.asarray(rows, np.float64)
    lines = []
    for ts in np.unique(rows[:, 0]):
        at = rows[rows[:, 0] == ts]
        for person in np.unique(at[:, 6]):
            box = at[at[:, 6] == person][0, 1:5]
            side = np.tile(box[2:] - box[:2], 2)
            moved = np.clip(box + rng.uniform(-0.04, 0.04, 4) * side, 0, 1)
            lines.append(f"{video_id},{int(ts):04d},{_coords(moved)},,{rng.uniform(0.85, 1):.4f}\n")
        if rng.random() < 0.25:
            w, h = rng.uniform(0.1, 0.3, 2)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            lines.append(f"{video_id},{int(ts):04d},{_coords([x, y, x + w, y + h])},,"
                         f"{rng.uniform(0.2, 0.75):.4f}\n")
    return "".join(lines)


def _text(value) -> str:
    """A Text feature as str (the dataset's records hold bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
