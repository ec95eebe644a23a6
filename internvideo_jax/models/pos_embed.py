"""Position tables at another frame count or resolution, resized the reference way.

The reference (InternVideo's 32-frame / 384px fine-tuning, UniFormerV2 and CLIP at a new
resolution) builds the table for the grid the checkpoint was trained at and resizes it with
torch.nn.functional.interpolate: spatial `mode='bicubic'` (Keys' cubic, a = -0.75, edge taps
clamped, align_corners=False, no antialiasing) and temporal `mode='linear'` (align_corners=False,
negative source coordinates clamped to 0). A freshly computed table at the new grid is a different
function and does not match the released fine-tuned weights.

Each 1-D resize is a fixed (out, in) matrix, so a table is resized with two einsums; the matrices
reproduce PyTorch's index arithmetic exactly (checked against torch in tests/test_pos_embed.py).
"""
from __future__ import annotations

import numpy as np

TORCH_BICUBIC_A = -0.75  # PyTorch's cubic convolution constant (jax.image uses a = -0.5)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances x (any shape)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int, a: float = TORCH_BICUBIC_A) -> np.ndarray:
    """(out_size, in_size) float64: out = M @ in along one axis, as torch's bicubic resize."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5  # not clamped for cubic (as torch)
    base = np.floor(src)
    frac = src - base
    m = np.zeros((out_size, in_size))
    for tap in range(-1, 3):
        idx = np.clip(base + tap, 0, in_size - 1).astype(int)  # edge taps repeat the border
        np.add.at(m, (np.arange(out_size), idx), _cubic(frac - tap, a))
    return m


def linear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64: torch's 1-D linear resize, align_corners=False."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size), lo), 1 - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m


def resize_spatial(table: np.ndarray, src_hw: tuple[int, int],
                   dst_hw: tuple[int, int]) -> np.ndarray:
    """(..., h*w, D) patch positions on an h x w grid -> (..., H*W, D), bicubic (torch's)."""
    (h, w), (hh, ww) = src_hw, dst_hw
    if table.shape[-2] != h * w:
        raise ValueError(f"position table has {table.shape[-2]} rows, the {h}x{w} grid needs "
                         f"{h * w}.")
    lead, d = table.shape[:-2], table.shape[-1]
    grid = np.asarray(table, np.float64).reshape(lead + (h, w, d))
    out = np.einsum("Hh,Ww,...hwd->...HWd", bicubic_matrix(h, hh), bicubic_matrix(w, ww), grid)
    return out.reshape(lead + (hh * ww, d)).astype(table.dtype)


def resize_video_table(table: np.ndarray, src_grid: tuple[int, int, int],
                       dst_grid: tuple[int, int, int]) -> np.ndarray:
    """(t*h*w, D) table over a (t, h, w) token grid (time-major) -> (T*H*W, D) for (T, H, W):
    bicubic in space per time step, then linear in time (the InternVideo fine-tuning rule)."""
    (t, h, w), (tt, hh, ww) = src_grid, dst_grid
    if table.shape[0] != t * h * w:
        raise ValueError(f"position table has {table.shape[0]} rows, the {src_grid} grid needs "
                         f"{t * h * w}.")
    d = table.shape[1]
    spatial = resize_spatial(np.asarray(table, np.float64).reshape(t, h * w, d), (h, w), (hh, ww))
    out = np.einsum("Tt,tnd->Tnd", linear_matrix(t, tt), spatial)  # (T, H*W, D)
    return out.reshape(tt * hh * ww, d).astype(table.dtype)


def resize_cls_table(table: np.ndarray, dst_hw: tuple[int, int]) -> np.ndarray:
    """CLIP/UniFormerV2 positional_embedding (1 + h*w, D) with a square grid -> (1 + H*W, D):
    the class position is kept, the patch positions resized bicubically."""
    n = table.shape[0] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"positional_embedding has {n} patch rows: not a square grid.")
    return np.concatenate([table[:1], resize_spatial(table[1:], (side, side), dst_hw)], axis=0)
