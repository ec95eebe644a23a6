"""Tube masking for VideoMAE pretraining (numpy, in the input pipeline, as the reference does)."""
from __future__ import annotations

import numpy as np


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
    num_masked = int(ratio * per_slice)
    slice_mask = np.zeros(per_slice, dtype=bool)
    slice_mask[rng.permutation(per_slice)[:num_masked]] = True
    return np.tile(slice_mask, t)
