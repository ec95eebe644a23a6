"""The embedded demo dataset: synthetic scenes whose class is the motion, encoded as real H.264 mp4.

A single frame cannot tell the class: a shape moves left/right/up/down, rotates clockwise or
counter-clockwise, grows or shrinks. Shape, colour, size, speed, start position and background
shading vary; every video has a class label and an English caption ("a small red triangle moves to
the left"). Everything, down to the bytes of each mp4, is a deterministic function of
(seed, index) (see encode_mp4).
"""
from __future__ import annotations

import dataclasses
import io
from fractions import Fraction

import av
import numpy as np

CLASSES = (
    "moving left", "moving right", "moving up", "moving down",
    "rotating clockwise", "rotating counterclockwise", "growing", "shrinking",
)
_CAPTION_VERB = {
    "moving left": "moves to the left", "moving right": "moves to the right",
    "moving up": "moves up", "moving down": "moves down",
    "rotating clockwise": "rotates clockwise",
    "rotating counterclockwise": "rotates counterclockwise",
    "growing": "grows bigger", "shrinking": "shrinks",
}
# Zero-shot classification of the demo's classes from text: each class named as its captions say it,
# in prompts that look like captions (averaged over the templates: prompt ensembling).
ZERO_SHOT_CLASSNAMES = tuple(_CAPTION_VERB[c] for c in CLASSES)
ZERO_SHOT_TEMPLATES = ("a small red triangle {}", "a large blue square {}",
                       "a small green pentagon {}", "a large white hexagon {}",
                       "a large yellow triangle {}", "a small magenta square {}")
# Zero-shot by colour (labels from the captions: eval.zero_shot_labels='caption').
ZERO_SHOT_COLOUR_TEMPLATES = ("a small {} triangle", "a large {} square", "a small {} circle",
                              "a large {} hexagon", "a {} pentagon that moves")


def motion_negatives(caption: str, k: int, rng: np.random.Generator) -> list[str]:
    """k hard-negative captions of a demo caption: the same words with the motion replaced by k
    other motions drawn without replacement ("a small red triangle moves to the left" ->
    "a small red triangle shrinks", ...): texts a video can only be told from by its motion.
    ValueError for a caption that ends in none of the demo's motions, or k > 7."""
    verbs = list(_CAPTION_VERB.values())
    own = [v for v in verbs if caption.endswith(" " + v)]
    if not own:
        raise ValueError(f"{caption!r} ends in none of the demo's motions {verbs}: motion "
                         f"negatives are for the demo's captions (data.negative_captions).")
    if not 0 <= k < len(verbs):
        raise ValueError(f"{k} motion negatives asked for; a caption has {len(verbs) - 1}.")
    stem = caption[:-len(own[0])]
    others = [v for v in verbs if v != own[0]]
    return [stem + others[i] for i in rng.permutation(len(others))[:k]]


COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "cyan": (40, 220, 230), "magenta": (220, 50, 220), "white": (245, 245, 245),
    "orange": (250, 140, 20),
}
# name -> number of polygon sides (0 = circle). A circle's rotation is invisible, so rotation
# classes never draw circles.
SHAPES = {"circle": 0, "triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Rendering parameters of one video."""

    label: int
    shape: str
    colour: str
    radius: float  # pixels, at the first frame
    speed: float  # pixels / frame, degrees / frame or relative size change / frame
    start: tuple[float, float]  # (y, x) centre at the first frame
    angle0: float  # degrees
    background: tuple[int, int, int]

    @property
    def size_word(self) -> str:
        return "small" if self.radius < 11 else "large"

    @property
    def caption(self) -> str:
        return f"a {self.size_word} {self.colour} {self.shape} {_CAPTION_VERB[CLASSES[self.label]]}"


def sample_scene(rng: np.random.Generator, size: int, num_frames: int) -> SceneSpec:
    """Draw the parameters of one scene of `num_frames` frames of `size` x `size` pixels."""
    label = int(rng.integers(len(CLASSES)))
    cls = CLASSES[label]
    shapes = [s for s in SHAPES if not (cls.startswith("rotating") and s == "circle")]
    shape = shapes[int(rng.integers(len(shapes)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    radius = float(rng.uniform(0.09, 0.2) * size)
    centre = (float(rng.uniform(0.35, 0.65) * size), float(rng.uniform(0.35, 0.65) * size))
    if cls.startswith("moving"):
        speed = float(rng.uniform(0.5, 1.0) * (size - 2 * radius) / num_frames)
        travel = speed * (num_frames - 1) / 2  # start half a path before the centre
        dy, dx = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (-1, 0),
                  "moving down": (1, 0)}[cls]
        centre = (centre[0] - dy * travel, centre[1] - dx * travel)
    elif cls.startswith("rotating"):
        speed = float(rng.uniform(4.0, 9.0))
    else:
        speed = float(rng.uniform(0.025, 0.045))
        if cls == "growing":
            radius = float(rng.uniform(0.06, 0.1) * size)
        else:
            radius = float(rng.uniform(0.22, 0.28) * size)
    background = tuple(int(v) for v in rng.integers(60, 120, size=3))
    return SceneSpec(label, shape, colour, radius, speed, centre, float(rng.uniform(0, 360)),
                     background)


def _shape_mask(yy: np.ndarray, xx: np.ndarray, sides: int, centre: tuple[float, float],
                radius: float, angle_deg: float) -> np.ndarray:
    """Boolean (H, W) mask of a circle (sides=0) or a regular convex polygon."""
    dy, dx = yy - centre[0], xx - centre[1]
    if sides == 0:
        return dy * dy + dx * dx <= radius * radius
    inside = np.ones(yy.shape, dtype=bool)
    apothem = radius * np.cos(np.pi / sides)
    for k in range(sides):  # intersection of half-planes, one per edge normal
        theta = np.deg2rad(angle_deg) + (2 * k + 1) * np.pi / sides
        inside &= dx * np.cos(theta) + dy * np.sin(theta) <= apothem
    return inside


def render(spec: SceneSpec, size: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene to (num_frames, size, size, 3) uint8 RGB."""
    cls = CLASSES[spec.label]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # A smooth background (a linear gradient plus a low-frequency wave): predictable from its
    # visible neighbours, so masked reconstruction has structure to learn beyond the moving shape.
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy) / size - 0.5  # (H, W) in about [-0.7, 0.7]
    freq, phase = rng.uniform(1.0, 3.0, size=2), rng.uniform(0, 2 * np.pi, size=2)
    wave = np.sin(2 * np.pi * freq[0] * xx / size + phase[0]) * np.sin(
        2 * np.pi * freq[1] * yy / size + phase[1])
    shading = rng.uniform(70, 110) * ramp + rng.uniform(12, 25) * wave  # (H, W)
    base = np.clip(np.asarray(spec.background, np.float32) + shading[..., None], 0, 255)
    colour = np.asarray(COLOURS[spec.colour], np.float32)
    sides = SHAPES[spec.shape]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        centre, radius, angle = spec.start, spec.radius, spec.angle0
        if cls.startswith("moving"):
            dy, dx = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (-1, 0),
                      "moving down": (1, 0)}[cls]
            centre = (centre[0] + dy * spec.speed * t, centre[1] + dx * spec.speed * t)
        elif cls == "rotating clockwise":  # image y points down: increasing angle is clockwise
            angle = angle + spec.speed * t
        elif cls == "rotating counterclockwise":
            angle = angle - spec.speed * t
        elif cls == "growing":
            radius = radius * (1 + spec.speed) ** t
        else:
            radius = radius * (1 - spec.speed) ** t
        mask = _shape_mask(yy, xx, sides, centre, radius, angle)[..., None]
        noise = rng.normal(0, 1, size=(size, size, 1))  # per-frame sensor noise
        frame = np.where(mask, colour, base) + noise
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def encode_mp4(frames: np.ndarray, fps: int | Fraction = 25, codec: str = "libx264", crf: int = 20,
               keyframe_interval: int | None = None, display_rotation: int = 0,
               pts: np.ndarray | None = None, time_base: Fraction | None = None) -> bytes:
    """Encode (T, H, W, 3) uint8 RGB frames to an mp4 container in memory (H and W even).

    display_rotation: degrees counter-clockwise stored in the display matrix (as phones do for
    portrait video); players, and decode.to_rgb, show the frames rotated by it.
    pts, time_base: (T,) presentation timestamps in units of time_base, to keep a variable frame
    rate (or any original timing); by default frames are 1 / fps apart.

    The same frames and arguments give the same bytes on every call: libx264 is run with its
    macroblock tree off (mbtree=0). With it on, about one encode in ten came out different from
    call to call (also single-threaded, and from frames handed over already as yuv420p), so two
    builds of the demo dataset differed in ~170 of 800 videos. Off costs no encode time (80x80x32
    frames: within noise of ~15 ms a call) and gives ~30% larger files at the same crf.
    """
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if pts is not None:
            stream.codec_context.time_base = time_base
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "fast", "mbtree": "0"}
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        for t, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if pts is not None:
                vf.pts, vf.time_base = int(pts[t]), time_base
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return buf.getvalue()


def make_example(seed: int, index: int, size: int = 80, num_frames: int = 32,
                 fps: int = 25) -> dict:
    """One encoded video with its label, caption and metadata; deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_scene(rng, size, num_frames)
    frames = render(spec, size, num_frames, rng)
    return {
        "video": encode_mp4(frames, fps=fps),
        "label": spec.label,
        "caption": spec.caption,
        "video_id": f"synthetic_{seed}_{index:06d}",
        "num_frames": num_frames,
        "fps": float(fps),
    }
