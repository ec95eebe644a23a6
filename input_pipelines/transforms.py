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


def scaled_crop(frames: list[av.VideoFrame], box: tuple[int, int, int, int],
                output_size: int, interpolation: str = "FAST_BILINEAR") -> np.ndarray:
    """Crop (x, y, w, h) of every decoded frame, resized to output_size^2, as uint8 RGB.

    Done as: scale the whole frame by (output_size / w, output_size / h) in the colour-conversion
    pass (swscale, bilinear), then slice the output_size^2 window at the scaled offset. That is the
    crop-then-resize of the reference up to bilinear weights at the crop border, and costs one
    conversion instead of a full-size conversion plus a separate resize. Training crops use
    swscale's FAST_BILINEAR (within ~1 grey level of exact bilinear on average, see the tests);
    pass "BILINEAR" for evaluation views.

    Returns:
      (T, output_size, output_size, 3) uint8.
    """
    x, y, w, h = box
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
