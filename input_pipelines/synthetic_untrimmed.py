"""An embedded untrimmed dataset for temporal action localization, encoded as real H.264 mp4.

Each video (8-16 s at 25 fps by default, 80 x 80 pixels) shows ONE shape over a smooth background
(the kind synthetic_videos.render draws). The shape rests, with a small per-frame jitter of its
position (up to half a pixel per axis) and angle (up to 1.5 degrees), except in one to three
segments (1.2-3.5 s each, at least 0.5 s apart) in which it performs one of the 8 motion classes of
synthetic_videos.CLASSES. Centre, radius and angle carry over from one segment to the next: a
motion starts where the shape rests and it rests where the motion ended. Motions are chosen so the
shape stays inside the frame and its radius within [0.06, 0.26] x size; rotations never happen to
circles.

Speeds are those of the trimmed clips (32 frames) so that a classifier trained on them recognises
the motions: moving 0.5-1.0 x (size - 2 x radius) / 32 pixels / frame (and at most the room left
divided by the segment's frames), rotating 4-9 degrees / frame. Growing and shrinking change the
radius by 2.0-4.5 % / frame (the trimmed clips: 2.5-4.5 %), at most what the size range and the
frame allow over the segment; over a 3.5 s segment the trimmed rates would compound past any sane
size, so long growth segments run at the low end of the range and the longest are shorter than
3.5 s (17 % or more change over 8 frames is still plainly visible).

Everything, down to the bytes of each mp4, is a deterministic function of (seed, index).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np

from input_pipelines.synthetic_videos import (CLASSES, COLOURS, SHAPES, _CAPTION_VERB, _shape_mask,
                                              encode_mp4)

# Segment timing, seconds.
MIN_SEGMENT_S, MAX_SEGMENT_S, MIN_GAP_S = 1.2, 3.5, 0.5
# Rates, per frame: moving (fractions of (size - 2 r) / _TRIMMED_FRAMES pixels), rotating
# (degrees), growing and shrinking (relative radius change).
_TRIMMED_FRAMES = 32
_MOVE_SPEED = (0.5, 1.0)
_ROTATION_SPEED = (4.0, 9.0)
_SIZE_RATE = (0.02, 0.045)
# Radius bounds, fractions of the frame size; pixels kept between the shape's circumcircle and the
# frame's edge (covers the jitter).
_MIN_RADIUS, _MAX_RADIUS = 0.06, 0.26
_MARGIN = 1.5
_JITTER_PX, _JITTER_DEG = 0.5, 1.5
# (dy, dx) of the moving classes, image y pointing down.
_DIRECTIONS = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (-1, 0),
               "moving down": (1, 0)}


@dataclasses.dataclass(frozen=True)
class Motion:
    """One action segment: frames start .. start + length - 1 are the frames that move."""

    start: int  # frames
    length: int  # frames
    label: int  # index into CLASSES
    rate: float  # pixels / frame, degrees / frame or relative radius change / frame


@dataclasses.dataclass(frozen=True)
class UntrimmedPlan:
    """Everything about one video except its random background, jitter and sensor noise."""

    shape: str
    colour: str
    background: tuple[int, int, int]  # RGB before shading
    num_frames: int
    fps: int
    centre: tuple[float, float]  # (y, x) pixels, at the first frame
    radius: float  # pixels (circumradius), at the first frame
    angle: float  # degrees, at the first frame
    jitter_px: float  # per-frame position jitter: uniform in +-jitter_px pixels per axis
    jitter_deg: float  # per-frame angle jitter: uniform in +-jitter_deg degrees
    motions: tuple[Motion, ...]

    @property
    def segments(self) -> list[tuple[float, float, int]]:
        """(start_s, end_s, class index) per motion: first moving frame / fps, (last + 1) / fps."""
        return [(m.start / self.fps, (m.start + m.length) / self.fps, m.label)
                for m in self.motions]

    @property
    def caption(self) -> str:
        """E.g. 'a red square rests, moves to the left, rests, grows bigger'."""
        parts, frame = [], 0
        for m in self.motions:
            if m.start > frame:
                parts.append("rests")
            parts.append(_CAPTION_VERB[CLASSES[m.label]])
            frame = m.start + m.length
        if frame < self.num_frames:
            parts.append("rests")
        return f"a {self.colour} {self.shape} " + ", ".join(parts)


def _apply(cls: str, rate: float, steps, centre: np.ndarray, radius, angle):
    """(centre, radius, angle) after `steps` frames (a scalar or a (T,) array) of motion `cls`.

    centre: (2,) or (T, 2) (y, x) pixels; radius pixels; angle degrees (clockwise, y points down).
    """
    if cls in _DIRECTIONS:
        return centre + np.multiply.outer(steps, _DIRECTIONS[cls]) * rate, radius, angle
    if cls == "rotating clockwise":
        return centre, radius, angle + rate * steps
    if cls == "rotating counterclockwise":
        return centre, radius, angle - rate * steps
    if cls == "growing":
        return centre, radius * (1 + rate) ** steps, angle
    return centre, radius * (1 - rate) ** steps, angle


def _room(cls: str, centre: np.ndarray, radius: float, size: int) -> float:
    """Pixels the centre can travel in the direction of moving class `cls`, keeping the margin."""
    dy, dx = _DIRECTIONS[cls]
    axis, sign = (0, dy) if dy else (1, dx)
    edge_distance = size - centre[axis] if sign > 0 else centre[axis]
    return edge_distance - radius - _MARGIN


def _rate_bounds(cls: str, sides: int, centre: np.ndarray, radius: float, size: int,
                 length: int) -> tuple[float, float]:
    """(lowest, highest) rate of `length` frames of motion `cls` from this state that keep the
    shape inside the frame and its radius in bounds; highest < lowest when no rate does."""
    if cls in _DIRECTIONS:
        lo, hi = (s * (size - 2 * radius) / _TRIMMED_FRAMES for s in _MOVE_SPEED)
        return lo, min(hi, _room(cls, centre, radius, size) / length)
    if cls.startswith("rotating"):
        lo, hi = _ROTATION_SPEED
        return lo, (-math.inf if sides == 0 else hi)  # a circle's rotation is invisible
    lo, hi = _SIZE_RATE
    if cls == "growing":
        limit = min(_MAX_RADIUS * size, min(*centre, *(size - centre)) - _MARGIN)
        return lo, min(hi, (limit / radius) ** (1 / length) - 1)
    return lo, min(hi, 1 - (_MIN_RADIUS * size / radius) ** (1 / length))


def _feasible(cls: str, sides: int, centre: np.ndarray, radius: float, size: int,
              length: int) -> bool:
    """Whether some rate of motion `cls` fits `length` frames from this state."""
    lo, hi = _rate_bounds(cls, sides, centre, radius, size, length)
    return hi >= lo


def _sample_motions(rng: np.random.Generator, first_label: int, count: int, budget: int,
                    min_len: int, max_len: int, gap: int, sides: int, centre: np.ndarray,
                    radius: float, angle: float, size: int) -> list[tuple[int, int, float]]:
    """Up to `count` (label, length frames, rate) in order, the first of class `first_label`
    (feasible from the given state), each later one of a class drawn from those feasible from the
    state the previous ones leave; their lengths plus gaps fit in `budget` frames. Fewer when no
    class is feasible from a state."""
    motions, label = [], first_label
    for k in range(count):
        if k:
            feasible = [c for c in range(len(CLASSES))
                        if _feasible(CLASSES[c], sides, centre, radius, size, min_len)]
            if not feasible:
                break
            label = feasible[int(rng.integers(len(feasible)))]
        cls = CLASSES[label]
        longest_allowed = min(max_len, budget - (count - 1 - k) * (min_len + gap))
        # The rate first (from the full range of the shortest segment), then a length that the
        # room allows at that rate: rates spread over the trimmed clips' range.
        rate = float(rng.uniform(*_rate_bounds(cls, sides, centre, radius, size, min_len)))
        longest = max(n for n in range(min_len, longest_allowed + 1)
                      if _rate_bounds(cls, sides, centre, radius, size, n)[1] >= rate)
        length = int(rng.integers(min_len, longest + 1))
        centre, radius, angle = _apply(cls, rate, length, centre, radius, angle)
        motions.append((label, length, rate))
        budget -= length + gap
    return motions


def _initial_state(rng: np.random.Generator, cls: str, size: int,
                   min_len: int) -> tuple[str, float, np.ndarray]:
    """(shape, radius pixels, (y, x) centre pixels) from which `min_len` frames of motion `cls`
    are feasible (drawn until they are: every class gets first segments, so rare ones too)."""
    while True:
        shape = list(SHAPES)[int(rng.integers(len(SHAPES)))]
        radius = float(rng.uniform(0.09, 0.2) * size)
        centre = rng.uniform(radius + _MARGIN, size - radius - _MARGIN, size=2)
        if _feasible(cls, SHAPES[shape], centre, radius, size, min_len):
            return shape, radius, centre


def _place(rng: np.random.Generator, lengths: list[int], num_frames: int,
           gap: int) -> list[int]:
    """Start frames of consecutive segments of `lengths` frames, at least `gap` frames apart, the
    frames left over spread at random before, between and after them."""
    slack = num_frames - sum(lengths) - (len(lengths) - 1) * gap
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    extra = np.diff(np.concatenate([[0], cuts]))
    starts, frame = [], 0
    for i, length in enumerate(lengths):
        frame += int(extra[i]) + (gap if i else 0)
        starts.append(frame)
        frame += length
    return starts


def sample_plan(rng: np.random.Generator, size: int = 80, fps: int = 25, min_seconds: float = 8,
                max_seconds: float = 16) -> UntrimmedPlan:
    """Draw one video of min_seconds-max_seconds seconds at `fps` of `size` x `size` pixels."""
    num_frames = int(round(rng.uniform(min_seconds, max_seconds) * fps))
    # Frames, rounded inwards (round(, 6): 1.2 * 25 is 30.000000000000004).
    min_len = math.ceil(round(MIN_SEGMENT_S * fps, 6))
    max_len = math.floor(round(MAX_SEGMENT_S * fps, 6))
    gap = math.ceil(round(MIN_GAP_S * fps, 6))
    if num_frames < min_len:
        raise ValueError(f"{num_frames} frames hold no segment of {min_len} frames.")
    first_label = int(rng.integers(len(CLASSES)))
    shape, radius, centre = _initial_state(rng, CLASSES[first_label], size, min_len)
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    background = tuple(int(v) for v in rng.integers(60, 120, size=3))
    angle = float(rng.uniform(0, 360))
    count = min(int(rng.integers(1, 4)), (num_frames + gap) // (min_len + gap))
    motions = _sample_motions(rng, first_label, count, num_frames, min_len, max_len, gap,
                              SHAPES[shape], centre, radius, angle, size)
    starts = _place(rng, [length for _, length, _ in motions], num_frames, gap)
    return UntrimmedPlan(
        shape=shape, colour=colour, background=background, num_frames=num_frames, fps=fps,
        centre=(float(centre[0]), float(centre[1])), radius=radius, angle=angle,
        jitter_px=float(rng.uniform(0, _JITTER_PX)), jitter_deg=float(rng.uniform(0, _JITTER_DEG)),
        motions=tuple(Motion(s, length, label, rate)
                      for s, (label, length, rate) in zip(starts, motions)))


def trajectory(plan: UntrimmedPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shape's state per frame without jitter: centres (T, 2) (y, x) pixels, radii (T,)
    pixels, angles (T,) degrees. Constant outside the motions."""
    t = np.arange(plan.num_frames)
    centres = np.tile(np.asarray(plan.centre, np.float64), (plan.num_frames, 1))
    radii = np.full(plan.num_frames, plan.radius)
    angles = np.full(plan.num_frames, plan.angle)
    for m in plan.motions:
        steps = np.clip(t - m.start + 1, 0, m.length)  # 0 before the segment, length after it
        centres, radii, angles = _apply(CLASSES[m.label], m.rate, steps, centres, radii, angles)
    return centres, radii, angles


def _background(rng: np.random.Generator, size: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """(size, size, 3) float32 smooth background: a linear gradient plus a low-frequency wave
    (as synthetic_videos.render draws)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy) / size - 0.5
    freq, phase = rng.uniform(1.0, 3.0, size=2), rng.uniform(0, 2 * np.pi, size=2)
    wave = np.sin(2 * np.pi * freq[0] * xx / size + phase[0]) * np.sin(
        2 * np.pi * freq[1] * yy / size + phase[1])
    shading = rng.uniform(70, 110) * ramp + rng.uniform(12, 25) * wave
    return np.clip(np.asarray(rgb, np.float32) + shading[..., None], 0, 255)


def render_untrimmed(plan: UntrimmedPlan, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a plan to (num_frames, size, size, 3) uint8 RGB; `rng` draws the background, the
    jitter and the per-frame sensor noise."""
    base = _background(rng, size, plan.background)
    centres, radii, angles = trajectory(plan)
    centres = centres + rng.uniform(-plan.jitter_px, plan.jitter_px, size=centres.shape)
    angles = angles + rng.uniform(-plan.jitter_deg, plan.jitter_deg, size=angles.shape)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    colour = np.asarray(COLOURS[plan.colour], np.float32)
    sides = SHAPES[plan.shape]
    frames = np.empty((plan.num_frames, size, size, 3), np.uint8)
    for t in range(plan.num_frames):
        mask = _shape_mask(yy, xx, sides, tuple(centres[t]), radii[t], angles[t])[..., None]
        noise = rng.normal(0, 1, size=(size, size, 1))  # per-frame sensor noise
        frames[t] = np.clip(np.where(mask, colour, base) + noise, 0, 255).astype(np.uint8)
    return frames


def make_untrimmed_example(seed: int, index: int, size: int = 80, fps: int = 25,
                           min_seconds: float = 8, max_seconds: float = 16) -> dict:
    """One encoded untrimmed video with its segments and metadata; deterministic in (seed, index).

    segments: [(start_s, end_s, class index)], seconds; label: -1 (no single class);
    duration: num_frames / fps seconds.
    """
    rng = np.random.default_rng([seed, index])
    plan = sample_plan(rng, size, fps, min_seconds, max_seconds)
    frames = render_untrimmed(plan, size, rng)
    return {
        "video": encode_mp4(frames, fps=fps),
        "video_id": f"untrimmed_{seed}_{index:05d}",
        "num_frames": plan.num_frames,
        "fps": float(fps),
        "duration": plan.num_frames / fps,
        "label": -1,
        "caption": plan.caption,
        "segments": plan.segments,
    }


def _text(value) -> str:
    """A Text feature as str (the dataset's records hold bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def ground_truth(examples: Iterable[tuple[str, dict]], version: str = "demo_untrimmed") -> dict:
    """ActivityNet-1.3 style ground truth of (subset, example) pairs, subset 'training' or
    'validation'; examples as make_untrimmed_example returns them or as the dataset stores them
    (segments an (N, 3) float32 array, text as bytes). Times in seconds, rounded to 0.1 ms:
    coarser than float32's error on them, so either form gives the same JSON.
    """
    database = {}
    for subset, ex in examples:
        database[_text(ex["video_id"])] = {
            "subset": subset,
            "duration": round(float(ex["duration"]), 4),
            "fps": float(ex["fps"]),
            "annotations": [{"segment": [round(float(s), 4), round(float(e), 4)],
                             "label": CLASSES[int(round(float(c)))]}
                            for s, e, c in ex["segments"]],
        }
    return {"version": version, "taxonomy": [], "database": database}
