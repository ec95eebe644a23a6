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


# ---- VideoMAE V2 dual masking: the decoder's running-cell mask ---------------------------------
# OpenGVLab/VideoMAEv2 (dataset/masking_generator.py, RunningCellMaskingGenerator): every 2x2 block
# of spatial positions holds the same 4-cell pattern, int(4 * ratio) cells of it hidden from the
# decoder; the pattern is a cyclic queue [1] * m + [0] * (4 - m) read from a pointer that advances
# by one cell per temporal slice, so the decoded cell moves over time. The clip's pointer start is
# one of the 4 positions, uniformly at random. The cells of a 2x2 block are read row-major:
# (h % 2, w % 2) = (0, 0), (0, 1), (1, 0), (1, 1) -> queue positions 0..3.
CELL = 4  # cells of the 2x2 block


def _cell_masked(ratio: float) -> int:
    m = int(CELL * ratio)
    if not 0 < m < CELL:
        raise ValueError(f"decoder mask ratio {ratio} hides {m} of the 4 cells of the running cell "
                         f"mask: give a ratio with 0 < int(4 * ratio) < 4 (e.g. 0.5, the "
                         f"VideoMAE V2 recipe).")
    return m


def _check_even(grid: tuple[int, int, int]) -> None:
    if grid[1] % 2 or grid[2] % 2:
        raise ValueError(f"the running cell mask tiles 2x2 cells over the {grid[1]}x{grid[2]} "
                         f"token grid: it needs an even number of tokens per side (crop size / "
                         f"patch size even).")


def num_decoded(grid: tuple[int, int, int], ratio: float) -> int:
    """Tokens per clip the running cell mask of `ratio` leaves to the decoder (the decoder's mask
    tokens under dual masking): T' * H'W' * (4 - int(4 * ratio)) / 4. The one statement of the
    count: running_cell_mask below and VideoMAEPretrain.num_decoded use it."""
    _check_even(grid)
    t, h, w = grid
    return t * (h // 2) * (w // 2) * (CELL - _cell_masked(ratio))


def running_cell_mask(grid: tuple[int, int, int], ratio: float = 0.5,
                      rng: np.random.Generator | None = None,
                      start: int | None = None) -> np.ndarray:
    """The decoder mask of VideoMAE V2's dual masking (running cell).

    Args:
      grid: token grid (T', H', W'), H' and W' even.
      ratio: decoder mask ratio; int(4 * ratio) of every 2x2 cell hidden from the decoder (0.5:
        two of four).
      rng: draws the pointer start (one of 4) when `start` is not given.
      start: the pointer start, 0..3 (the pattern at slice t is the queue read from start + t + 1).
    Returns:
      (T'*H'*W',) bool, True = NOT decoded (the reference's decode_masked_pos), tokens in (t, h, w)
      order; exactly N - num_decoded(grid, ratio) True, the same count on every slice. The decoder
      gets mask tokens at the False positions, whether the encoder saw them or not; the loss is on
      those the encoder mask hid.
    """
    _check_even(grid)
    m = _cell_masked(ratio)
    if start is None:
        start = int((rng or np.random.default_rng()).integers(CELL))
    t, h, w = grid
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    cell = 2 * (hh % 2) + ww % 2  # position within the 2x2 block, row-major
    # queue [1]*m + [0]*(4-m) read cyclically from pointer p = start + t + 1: cell c reads
    # queue[(c + p) % 4], hidden when that index is < m.
    return (((cell + start + tt + 1) % CELL) < m).reshape(-1)
