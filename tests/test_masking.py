import numpy as np

from input_pipelines.masking import tube_mask


def test_tube_mask_counts_and_identical_slices():
    grid = (8, 14, 14)
    mask = tube_mask(grid, 0.9, np.random.default_rng(0))
    assert mask.shape == (8 * 196,) and mask.dtype == bool
    slices = mask.reshape(8, 196)
    assert (slices.sum(axis=1) == 176).all()  # int(0.9 * 196) masked, 20 visible per slice
    assert (slices == slices[0]).all()  # the same spatial positions at every time step
    assert (~mask).sum() == 160


def test_tube_mask_deterministic_per_seed():
    a = tube_mask((4, 7, 7), 0.75, np.random.default_rng(5))
    b = tube_mask((4, 7, 7), 0.75, np.random.default_rng(5))
    c = tube_mask((4, 7, 7), 0.75, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
