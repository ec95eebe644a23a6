"""Norm-pixel target and masked MSE against a NumPy transcription of the reference formula."""
import jax.numpy as jnp
import numpy as np

from input_pipelines import normalization
from internvideo_jax.training import losses

MEAN, STD = (np.asarray(v) for v in normalization.get("imagenet"))


def _reference_target(normalized_bcthw, patch):
    """The released code: un-normalise, rearrange b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c,
    normalise each patch per channel with the unbiased std, eps outside the sqrt, flatten."""
    pt, ph, pw = patch
    x = normalized_bcthw * STD[None, :, None, None, None] + MEAN[None, :, None, None, None]
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    x = x.transpose(0, 2, 4, 6, 3, 5, 7, 1)  # b t h w p0 p1 p2 c
    x = x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw, c)
    mean = x.mean(axis=-2, keepdims=True)
    std = np.sqrt(x.var(axis=-2, ddof=1, keepdims=True))
    x = (x - mean) / (std + 1e-6)
    return x.reshape(b, x.shape[1], -1)


def test_norm_pixel_target_matches_reference_formula():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 4, 8, 12, 3)).astype(np.uint8)  # (B, T, H, W, C)
    pixels01 = pixels.astype(np.float64) / 255.0
    normalized_bcthw = ((pixels01 - MEAN) / STD).transpose(0, 4, 1, 2, 3)
    expected = _reference_target(normalized_bcthw, (2, 4, 4))
    got = np.asarray(losses.norm_pixel_target(jnp.asarray(pixels01, jnp.float32), (2, 4, 4)))
    assert got.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_flat_patch_target_has_no_nan_thanks_to_eps():
    flat = jnp.full((1, 2, 4, 4, 3), 0.5)
    assert np.all(np.asarray(losses.norm_pixel_target(flat, (2, 4, 4))) == 0.0)


def test_masked_mse_uses_masked_tokens_only_in_token_order():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(2, 6, 5)).astype(np.float32)
    mask = np.array([[False, True, False, True, True, False], [True, True, False, False, False, True]])
    pred = rng.normal(size=(2, 3, 5)).astype(np.float32)
    expected = np.mean([(pred[b] - target[b][mask[b]]) ** 2 for b in range(2)])
    got = float(losses.masked_reconstruction_loss(jnp.asarray(pred), jnp.asarray(target),
                                                  jnp.asarray(mask)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
