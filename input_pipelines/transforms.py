"""Spatial augmentation of uint8 clips (T, H, W, 3); the same parameters for every frame of a clip."""
from __future__ import annotations

import av
import numpy as np

from input_pipelines import decode

# Scales of VideoMAE's multi-scale crop (GroupMultiScaleCrop(input_size, [1, .875, .75, .66])).
MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)


def _fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 (x, y) crop offsets of the reference's fix_crop + more_fix_crop grid."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2),  # corners and centre
            (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * ws, j * hs) for i, j in grid]


def multi_scale_crop_box(image_w: int, image_h: int, output_size: int,
                         rng: np.random.Generator, scales=MULTI_SCALE_CROP_SCALES,
                         max_distort: int = 1) -> tuple[int, int, int, int]:
    """Draw a crop (x, y, w, h) as VideoMAE's GroupMultiScaleCrop does.

    Crop side lengths are int(min(W, H) * scale), snapped to `output_size` when within 3 pixels;
    width and height scales differ by at most `max_distort` steps; the offset is one of 13 fixed
    positions (corners, centre, edge midpoints, quarter points).
    """
    base = min(image_w, image_h)
    sizes = [int(base * s) for s in scales]
    sizes = [output_size if abs(s - output_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes)
             if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[int(rng.integers(len(pairs)))]
    offsets = _fixed_offsets(image_w, image_h, crop_w, crop_h)
    x, y = offsets[int(rng.integers(len(offsets)))]
    return x, y, crop_w, crop_h


# scaled_crop's "auto" scaler, chosen on benchmarks/scaler.py (docs/benchmarks.md, "Crop scaler").
# swscale's BILINEAR widens its tent filter with the downscale factor, as Pillow's resize does: it
# is the swscale filter closest to the reference Pillow BILINEAR crop + resize at every downscale
# measured (0.09x-0.95x; ~1.2-2.5 grey levels mean abs error for the filter alone). FAST_BILINEAR
# is a fixed 2-tap filter: it aliases once the crop shrinks by more than 1.25x (+0.85 levels at
# 0.75x, +1.5 at 0.7x, +3 at 0.5x, +13 at 0.09x), is ~0.3 level worse near 1x (coarser weights)
# and 0.3-2.3 worse upscaling, where it is no faster. It is kept where it is ~1.5x faster and
# costs at most ~0.6 level more: both axes scaled by a factor in [FAST_BILINEAR_MIN_SCALE, 1].
FAST_BILINEAR_MIN_SCALE = 0.8


def crop_interpolation(crop_w: float, crop_h: float, output_size: int) -> str:
    """The swscale filter scaled_crop's "auto" uses for a crop_w x crop_h box -> output_size^2.

    "FAST_BILINEAR" when both axes shrink by at most 1 / FAST_BILINEAR_MIN_SCALE (1.25x) or keep
    their size; otherwise "BILINEAR", which is antialiased for downscales (its support widens with
    the factor) and exact bilinear for upscales.
    """
    lo, hi = sorted((output_size / crop_w, output_size / crop_h))
    return "FAST_BILINEAR" if lo >= FAST_BILINEAR_MIN_SCALE and hi <= 1.0 else "BILINEAR"


def scaled_crop(frames: list[av.VideoFrame], box: tuple[float, float, float, float],
                output_size: int, interpolation: str = "auto") -> np.ndarray:
    """Crop (x, y, w, h) of every decoded frame, resized to output_size^2, as uint8 RGB.

    Done as: scale the whole frame by (output_size / w, output_size / h) in the colour-conversion
    pass (swscale), then slice the output_size^2 window at the scaled offset; one conversion
    instead of a full-size conversion plus a separate resize.

    interpolation: "auto" (default) picks the swscale filter by the scale (crop_interpolation:
    BILINEAR, antialiased when downscaling, except FAST_BILINEAR for downscales of at most 1.25x);
    an av.video.reformatter.Interpolation name ("BILINEAR", "FAST_BILINEAR", "AREA", ...) forces
    that filter.

    Accuracy, against the reference (the full-size RGB frame cropped, then resized with Pillow's
    antialiased BILINEAR) on natural-image-like H.264 frames (benchmarks/scaler.py): "auto" is
    2.5-5.8 grey levels off on average for multi-scale and random resized crops to 64-224 px
    from 720p and 320p video (FAST_BILINEAR, the old default: 10-16 at 64 px, 3.3-5.9 at 224 px).
    Of that, ~1.2-2.5 is the filter; the rest is geometry: the window starts on a whole pixel of
    the scaled frame, so it is offset from the box by up to half an output pixel (5.6 source
    pixels for 720 -> 64), the scale is rounded to a whole scaled-frame size, and pixels at the
    crop border are weighted with pixels outside it. Boxes that fall on whole scaled pixels
    (evaluation views: short side resized, then cropped) have the filter error only (1.2-1.8 with
    BILINEAR).

    Returns:
      (T, output_size, output_size, 3) uint8.
    """
    x, y, w, h = box
    if interpolation == "auto":
        interpolation = crop_interpolation(w, h, output_size)
    width, height = decode.display_size(frames[0])  # upright, as to_rgb returns them
    sx, sy = output_size / w, output_size / h
    sw, sh = max(output_size, round(width * sx)), max(output_size, round(height * sy))
    cx, cy = min(round(x * sx), sw - output_size), min(round(y * sy), sh - output_size)
    out = np.empty((len(frames), output_size, output_size, 3), np.uint8)
    for t, frame in enumerate(frames):
        out[t] = decode.to_rgb(frame, sw, sh, interpolation)[cy:cy + output_size,
                                                             cx:cx + output_size]
    return out


def random_flip(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal flip of the whole clip with probability 0.5."""
    return frames[:, :, ::-1] if rng.random() < 0.5 else frames


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) after resizing so the shorter side is `short_side`, keeping the aspect ratio."""
    if width <= height:
        return short_side, int(round(height * short_side / width))
    return int(round(width * short_side / height)), short_side


def three_crop_boxes(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    """Test-time spatial views: 3 square crops along the long side (start, centre, end).

    Applied after resizing the short side to `size`, so each crop spans the whole short side.
    """
    if width >= height:
        xs = [0, (width - size) // 2, width - size]
        return [(x, (height - size) // 2, size, size) for x in xs]
    ys = [0, (height - size) // 2, height - size]
    return [((width - size) // 2, y, size, size) for y in ys]


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """Inception-style crop (x, y, w, h), torchvision's RandomResizedCrop rule.

    Up to 10 tries: area uniform in scale * W*H, log-uniform aspect ratio in `ratio`; the first box
    that fits is taken at a uniform position. Otherwise a centre crop at the nearest allowed ratio.
    """
    area = width * height
    log_ratio = np.log(ratio)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_erasing(clip: np.ndarray, rng: np.random.Generator, probability: float = 0.25,
                   area=(0.02, 1 / 3), log_aspect=(np.log(0.3), np.log(1 / 0.3))) -> np.ndarray:
    """Erase one rectangle of the clip with per-pixel random values (timm's mode='pixel').

    The same rectangle on every frame (a clip-level augmentation; the reference erases each frame
    at its own position). Values are uint8 uniform noise here: the clip is not normalised yet, and
    uniform [0, 255] noise is what normal(0, 1) noise in normalised space roughly spans.
    clip (T, H, W, 3) uint8 -> same shape, a copy when erased.
    """
    if rng.random() >= probability:
        return clip
    _, height, width, _ = clip.shape
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        aspect = float(np.exp(rng.uniform(*log_aspect)))
        h, w = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if w < width and h < height:
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            clip = clip.copy()
            clip[:, y:y + h, x:x + w] = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
            return clip
    return clip
