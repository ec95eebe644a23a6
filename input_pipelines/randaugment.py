"""RandAugment for video clips in NumPy: timm's 'rand-m{M}-n{N}-mstd{S}-inc1' policy, with the
same operation and magnitude on every frame of a clip.

Per clip: N operations drawn uniformly (with replacement) from OPS, each applied with probability
0.5 at magnitude ~ Normal(M, S) clipped to [0, 10]. Magnitude mappings follow timm's 'increasing'
variants; geometric operations resample bilinearly and fill with the ImageNet mean pixel.
Photometric statistics (contrast mean, autocontrast range, equalisation histogram) are per frame,
as PIL computes them per image.

clip: (T, H, W, 3) uint8 -> (T, H, W, 3) uint8.
"""
from __future__ import annotations

import numpy as np

FILL = np.array([124, 116, 104], np.float32)  # ImageNet mean pixel, timm's hparams['img_mean']
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # PIL's L conversion


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _blend(degenerate: np.ndarray, clip: np.ndarray, factor: float) -> np.ndarray:
    out = degenerate.astype(np.float32) + factor * (clip.astype(np.float32) - degenerate)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)  # PIL rounds on the blend


def _gray(clip: np.ndarray) -> np.ndarray:
    return (clip.astype(np.float32) @ _GRAY)[..., None]  # (T, H, W, 1)


def affine(clip: np.ndarray, matrix: tuple[float, ...]) -> np.ndarray:
    """PIL Image.transform(AFFINE, matrix, BILINEAR, fillcolor=FILL) for every frame.

    matrix (a, b, c, d, e, f): output pixel (x, y) samples input (a x + b y + c, d x + e y + f),
    pixel centres at +0.5 as PIL.
    """
    t, h, w, _ = clip.shape
    a, b, c, d, e, f = matrix
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    sx = a * xs + b * ys + c - 0.5
    sy = d * xs + e * ys + f - 0.5
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    wx, wy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = clip.astype(np.float32)
    out = np.zeros((t, h, w, 3), np.float32)
    for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                           (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + dy, x0 + dx
        inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]
        sample = src[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        out += weight * np.where(inside, sample, FILL)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def rotate(clip, degrees: float):
    """Rotation about the centre (PIL Image.rotate, counter-clockwise for positive degrees)."""
    _, h, w, _ = clip.shape
    angle = -np.deg2rad(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    cx, cy = w / 2.0, h / 2.0
    return affine(clip, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


def shear_x(clip, v):
    return affine(clip, (1, v, 0, 0, 1, 0))


def shear_y(clip, v):
    return affine(clip, (1, 0, 0, v, 1, 0))


def translate_x(clip, fraction):
    return affine(clip, (1, 0, fraction * clip.shape[2], 0, 1, 0))


def translate_y(clip, fraction):
    return affine(clip, (1, 0, 0, 0, 1, fraction * clip.shape[1]))


def auto_contrast(clip):
    """PIL ImageOps.autocontrast per frame and channel: int(x * scale + offset) in float64."""
    lo = clip.min(axis=(1, 2), keepdims=True).astype(np.float64)
    hi = clip.max(axis=(1, 2), keepdims=True).astype(np.float64)
    scale = 255.0 / np.maximum(hi - lo, 1)
    out = np.where(hi > lo, clip * scale + (-lo * scale), clip)
    return np.clip(np.trunc(out), 0, 255).astype(np.uint8)


def equalize(clip):
    """PIL ImageOps.equalize per frame and channel."""
    out = np.empty_like(clip)
    for t in range(clip.shape[0]):
        for ch in range(3):
            x = clip[t, :, :, ch]
            hist = np.bincount(x.ravel(), minlength=256)
            nonzero = hist[hist > 0]
            step = (nonzero.sum() - nonzero[-1]) // 255 if len(nonzero) else 0
            if step == 0:
                out[t, :, :, ch] = x
                continue
            lut = (np.concatenate([[0], np.cumsum(hist)[:-1]]) + step // 2) // step
            out[t, :, :, ch] = np.clip(lut, 0, 255).astype(np.uint8)[x]
    return out


def invert(clip):
    return 255 - clip


def posterize(clip, bits: int):
    return clip & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(clip, threshold: int):
    return np.where(clip >= threshold, 255 - clip, clip).astype(np.uint8)


def solarize_add(clip, add: int, threshold: int = 128):
    added = np.minimum(clip.astype(np.int32) + add, 255).astype(np.uint8)
    return np.where(clip < threshold, added, clip)


def color(clip, factor):
    return _blend(np.repeat(_gray(clip), 3, axis=-1), clip, factor)


def contrast(clip, factor):
    mean = np.floor(_gray(clip).mean(axis=(1, 2, 3), keepdims=True) + 0.5)  # per frame
    return _blend(np.broadcast_to(mean, clip.shape), clip, factor)


def brightness(clip, factor):
    return _blend(np.zeros_like(clip), clip, factor)


def sharpness(clip, factor):
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, /13); borders keep the original."""
    x = clip.astype(np.float32)
    smooth = x.copy()
    acc = sum(x[:, 1 + dy:x.shape[1] - 1 + dy, 1 + dx:x.shape[2] - 1 + dx]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)) + 4 * x[:, 1:-1, 1:-1]
    smooth[:, 1:-1, 1:-1] = np.floor(acc / 13 + 0.5)
    return _blend(smooth, clip, factor)


# name -> (function, magnitude (0..10) -> argument, given an rng for the sign)
OPS = {
    "AutoContrast": (lambda c, _: auto_contrast(c), lambda m, r: None),
    "Equalize": (lambda c, _: equalize(c), lambda m, r: None),
    "Invert": (lambda c, _: invert(c), lambda m, r: None),
    "Rotate": (rotate, lambda m, r: _signed(m / 10 * 30.0, r)),
    "PosterizeIncreasing": (posterize, lambda m, r: 4 - int(m / 10 * 4)),
    "SolarizeIncreasing": (solarize, lambda m, r: 256 - int(m / 10 * 256)),
    "SolarizeAdd": (solarize_add, lambda m, r: int(m / 10 * 110)),
    "ColorIncreasing": (color, lambda m, r: 1.0 + _signed(m / 10 * 0.9, r)),
    "ContrastIncreasing": (contrast, lambda m, r: 1.0 + _signed(m / 10 * 0.9, r)),
    "BrightnessIncreasing": (brightness, lambda m, r: 1.0 + _signed(m / 10 * 0.9, r)),
    "SharpnessIncreasing": (sharpness, lambda m, r: 1.0 + _signed(m / 10 * 0.9, r)),
    "ShearX": (shear_x, lambda m, r: _signed(m / 10 * 0.3, r)),
    "ShearY": (shear_y, lambda m, r: _signed(m / 10 * 0.3, r)),
    "TranslateXRel": (translate_x, lambda m, r: _signed(m / 10 * 0.45, r)),
    "TranslateYRel": (translate_y, lambda m, r: _signed(m / 10 * 0.45, r)),
}


def rand_augment(clip: np.ndarray, rng: np.random.Generator, num_ops: int = 4,
                 magnitude: float = 7.0, magnitude_std: float = 0.5,
                 prob: float = 0.5) -> np.ndarray:
    """Apply `num_ops` random operations (each with probability `prob`) to the whole clip."""
    names = list(OPS)
    for name in (names[i] for i in rng.integers(0, len(names), num_ops)):
        if rng.random() >= prob:
            continue
        m = float(np.clip(rng.normal(magnitude, magnitude_std), 0, 10)) if magnitude_std > 0 \
            else magnitude
        fn, arg = OPS[name]
        clip = fn(clip, arg(m, rng))
    return clip
