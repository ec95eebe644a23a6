"""Augmentations: crop geometry, erasing, mixup / cutmix, checked against their definitions."""
import jax
import jax.numpy as jnp
import numpy as np

from input_pipelines import transforms
from internvideo_jax.training import mixup


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        x, y, w, h = transforms.random_resized_crop_box(320, 240, rng)
        assert 0 <= x and x + w <= 320 and 0 <= y and y + h <= 240
        if (w, h) != (320, 240):  # not the fallback
            assert 0.08 * 320 * 240 * 0.9 <= w * h <= 320 * 240
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_random_resized_crop_fallback_is_a_centre_crop_at_the_nearest_ratio():
    box = transforms.random_resized_crop_box(100, 100, np.random.default_rng(0), scale=(1, 1),
                                             ratio=(2, 3))
    assert box == (0, 25, 100, 50)


def test_random_erasing_one_rectangle_same_on_every_frame():
    clip = np.full((4, 32, 40, 3), 7, np.uint8)
    out = transforms.random_erasing(clip, np.random.default_rng(1), probability=1.0)
    changed = (out != 7).any(axis=-1)  # (T, H, W)
    assert (changed == changed[0]).all()
    ys, xs = np.nonzero(changed[0])
    box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert 0.02 * 32 * 40 * 0.8 <= box_area <= 32 * 40 / 3 * 1.2
    assert clip.max() == 7  # the input is not modified
    np.testing.assert_array_equal(
        transforms.random_erasing(clip, np.random.default_rng(1), probability=0.0), clip)


def _batch():
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.normal(size=(4, 2, 16, 16, 3)), jnp.float32)
    return video, jnp.asarray([0, 1, 2, 3])


def test_mixup_is_a_convex_combination_with_the_reversed_batch():
    video, labels = _batch()
    out, targets = mixup.mixup_cutmix(jax.random.key(3), video, labels, 5, cutmix_alpha=0.0,
                                      smoothing=0.0)
    lam = float(targets[0, 0])  # sample 0 (label 0) is mixed with sample 3 (label 3)
    np.testing.assert_allclose(float(targets[0, 3]), 1 - lam, rtol=1e-6)
    np.testing.assert_allclose(out, lam * video + (1 - lam) * video[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area():
    video, labels = _batch()
    for seed in range(5):
        out, targets = mixup.mixup_cutmix(jax.random.key(seed), video, labels, 5,
                                          mixup_alpha=0.0, smoothing=0.0)
        from_partner = np.all(np.asarray(out) == np.asarray(video[::-1]), axis=(1, 4))  # (B,H,W)
        from_self = np.all(np.asarray(out) == np.asarray(video), axis=(1, 4))
        assert (from_partner | from_self).all()  # every pixel comes from one of the two clips
        area = from_partner[0].mean()
        np.testing.assert_allclose(float(targets[0, 3]), area, atol=1e-6)
        np.testing.assert_allclose(float(targets[0, 0]), 1 - area, atol=1e-6)


def test_label_smoothing_values_follow_timm():
    t = mixup.smooth_one_hot(jnp.asarray([2]), 10, 0.1)
    np.testing.assert_allclose(t[0], [0.01] * 2 + [0.91] + [0.01] * 7, rtol=1e-6)
