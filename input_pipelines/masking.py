"""Tube masking for VideoMAE pretraining (numpy, in the input pipeline, as the reference does)."""
from __future__ import annotations

import numpy as np


def num_masked(grid: tuple[int, int, int], ratio: float) -> int:
    """Masked tokens per clip of tube masking: int(ratio * H'W') per temporal slice, T' slices.
    The one statement of the count: the masks below and VideoMAEPretrain.num_masked use it."""
    t, h, w = grid
    return int(ratio * h * w) * t


def tube_mask(grid: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Mask int(ratio * H'W') spatial positions, the same positions on every temporal slice.

    Args:
      grid: token grid (T', H', W').
      ratio: masking ratio, e.g. 0.9.
    Returns:
      (T'*H'*W',) bool, True = masked, tokens in (t, h, w) order.
    """
    t, h, w = grid
    per_slice = h * w
    slice_mask = np.zeros(per_slice, dtype=bool)
    slice_mask[rng.permutation(per_slice)[:num_masked((1, h, w), ratio)]] = True
    return np.tile(slice_mask, t)
