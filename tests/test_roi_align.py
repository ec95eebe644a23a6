"""RoIAlign against a loop-by-loop NumPy transcription of torchvision's algorithm (and torchvision
itself when it is importable), under jit, and its gradient by finite differences."""
import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from internvideo_jax.models.roi_align import roi_align
from tests.helpers import REPO


def _bilinear(feat: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's bilinear_interpolate at (y, x) of feat (H, W, C), its edge rules included."""
    h, w, _ = feat.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feat.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feat[y_low, x_low] + hy * lx * feat[y_low, x_high]
            + ly * hx * feat[y_high, x_low] + ly * lx * feat[y_high, x_high])


def _roi_align_ref(features, boxes, out, scale, sampling_ratio, aligned):
    """(B, H, W, C), (B, M, 4) -> (B, M, oh, ow, C), float64, one sampling point at a time."""
    oh, ow = out
    bsz, m = boxes.shape[:2]
    result = np.zeros((bsz, m, oh, ow, features.shape[-1]))
    offset = 0.5 if aligned else 0.0
    for b in range(bsz):
        for i in range(m):
            x1, y1, x2, y2 = (float(v) * scale - offset for v in boxes[b, i])
            roi_w, roi_h = x2 - x1, y2 - y1
            if not aligned:
                roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
            bin_h, bin_w = roi_h / oh, roi_w / ow
            ny = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / oh)
            nx = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / ow)
            count = max(ny * nx, 1)
            for ph in range(oh):
                for pw in range(ow):
                    acc = np.zeros(features.shape[-1])
                    for iy in range(ny):
                        y = y1 + ph * bin_h + (iy + 0.5) * bin_h / ny
                        for ix in range(nx):
                            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / nx
                            acc += _bilinear(features[b], y, x)
                    result[b, i, ph, pw] = acc / count
    return result


H, W, C, SCALE = 6, 7, 3, 0.5  # feature map 6x7 from a 12x14-pixel frame

# [x1, y1, x2, y2] in input pixels (one feature cell = 2 pixels)
BOXES = np.array([
    [[0.0, 0.0, 14.0, 12.0],   # the whole frame
     [2.0, 4.0, 8.0, 10.0],    # on cell borders
     [3.3, 1.7, 9.1, 11.9],    # inside, off the grid
     [-6.0, -5.0, 5.0, 4.0],   # partly outside, top left
     [9.0, 7.0, 20.0, 18.0]],  # partly outside, bottom right
    [[1.0, 1.0, 1.0, 1.0],     # zero area (adaptive: no sampling point)
     [12.0, 10.0, 14.0, 12.0],  # the last cells, reads clamp at H - 1, W - 1
     [-2.0, -2.0, 0.0, 0.0],   # samples near -1: valid, clamped to 0
     [0.5, 0.5, 13.5, 11.5],
     [6.0, 2.0, 4.0, 9.0]],    # x2 < x1
], np.float32)


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(0).normal(size=(2, H, W, C)).astype(np.float32)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
@pytest.mark.parametrize("out", [(7, 7), (3, 2)])
def test_matches_numpy_loops(features, aligned, sampling_ratio, out):
    got = roi_align(features, BOXES, out, spatial_scale=SCALE, sampling_ratio=sampling_ratio,
                    aligned=aligned)
    want = _roi_align_ref(features.astype(np.float64), BOXES, out, SCALE, sampling_ratio, aligned)
    assert got.shape == (2, 5) + out + (C,)
    # float32 weights and sums of at most ~40 terms of unit size: errors are ~1e-6
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5)


def test_edge_rules_one_point_per_bin():
    """Single sampling points placed on torchvision's edges, feature value = 10 * row + column."""
    feat = (10.0 * np.arange(4)[:, None] + np.arange(5)[None, :])[None, :, :, None]  # (1, 4, 5, 1)
    feat = feat.astype(np.float32)
    # aligned=False, scale 1, 1x1 output, 1 point: the point is the box center
    centers = {(-1.0, -1.0): 0.0,    # on the -1 edge: valid, read at (0, 0)
               (-1.01, 2.0): 0.0,    # y < -1: zero
               (4.0, 5.0): 34.0,     # y = H, x = W: valid, the last cell
               (4.01, 1.0): 0.0,     # y > H: zero
               (3.0, 4.0): 34.0,     # at H - 1, W - 1: the last cell alone
               (2.5, 3.5): 28.5,     # plain bilinear
               (-0.5, 0.25): 0.25}   # y in [-1, 0): read at 0
    boxes = np.array([[[x - 1.0, y - 1.0, x + 1.0, y + 1.0] for (y, x) in centers]], np.float32)
    got = roi_align(feat, boxes, 1, spatial_scale=1.0, sampling_ratio=1, aligned=False)
    np.testing.assert_allclose(np.asarray(got)[0, :, 0, 0, 0], list(centers.values()), atol=1e-5)


def test_adaptive_beyond_the_bound_uses_the_bound(features):
    """A box larger than the frame needs more adaptive points (ceil(30 / 2) = 15 per bin) than a
    static bound of 3; it is sampled with the bound's count, as sampling_ratio = 3 would be. (The
    default bound, (ceil(H / oh), ceil(W / ow)), is reached exactly by the whole-frame box of
    test_matches_numpy_loops at output (3, 2).)"""
    big = np.array([[[-20.0, -20.0, 40.0, 40.0]], [[0.0, 0.0, 14.0, 12.0]]], np.float32)
    got = roi_align(features, big, (2, 2), spatial_scale=SCALE, sampling_ratio=0, aligned=True,
                    max_sampling_ratio=3)
    bound = roi_align(features, big, (2, 2), spatial_scale=SCALE, sampling_ratio=3, aligned=True)
    np.testing.assert_allclose(np.asarray(got)[0], np.asarray(bound)[0], atol=1e-6)
    # a bound of 15 makes it exact again
    exact = roi_align(features, big, (2, 2), spatial_scale=SCALE, sampling_ratio=0, aligned=True,
                      max_sampling_ratio=15)
    want = _roi_align_ref(features.astype(np.float64), big, (2, 2), SCALE, 0, True)
    np.testing.assert_allclose(np.asarray(exact), want, rtol=0, atol=2e-5)
    assert np.abs(np.asarray(got)[0] - want[0]).max() > 1e-3  # the bound did change the result


def test_jit_equals_eager(features):
    fn = jax.jit(lambda f, b: roi_align(f, b, (7, 7), spatial_scale=SCALE, sampling_ratio=0,
                                        aligned=False))
    eager = roi_align(features, BOXES, (7, 7), spatial_scale=SCALE, sampling_ratio=0,
                      aligned=False)
    np.testing.assert_allclose(np.asarray(fn(features, BOXES)), np.asarray(eager), atol=1e-6)


def test_refuses_bad_shapes(features):
    with pytest.raises(ValueError, match=r"boxes must be \(B, M, 4\)"):
        roi_align(features, BOXES[:1], spatial_scale=SCALE, sampling_ratio=2)
    with pytest.raises(ValueError, match=r"features must be \(B, H, W, C\)"):
        roi_align(features[0], BOXES, spatial_scale=SCALE, sampling_ratio=2)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_matches_torchvision(features, aligned, sampling_ratio):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    nchw = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous()
    rois = [torch.from_numpy(b) for b in BOXES]
    want = ops.roi_align(nchw, rois, (7, 7), SCALE, sampling_ratio, aligned)  # (B*M, C, 7, 7)
    want = want.permute(0, 2, 3, 1).reshape(2, 5, 7, 7, C).numpy()
    got = roi_align(features, BOXES, (7, 7), spatial_scale=SCALE, sampling_ratio=sampling_ratio,
                    aligned=aligned)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5)


_GRAD_CHECK = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from internvideo_jax.models.roi_align import roi_align
    rng = np.random.default_rng(1)
    feat = rng.normal(size=(2, 5, 6, 2))
    boxes = np.array([[[1.3, 0.7, 9.2, 8.1], [-3.0, 2.0, 4.0, 12.0]],
                      [[0.0, 0.0, 12.0, 10.0], [5.5, 5.5, 7.5, 9.5]]])
    cot = rng.normal(size=(2, 2, 3, 3, 2))
    for ratio, aligned in [(2, True), (0, False)]:
        def f(x):
            out = roi_align(x, boxes, (3, 3), spatial_scale=0.5, sampling_ratio=ratio,
                            aligned=aligned)
            return jnp.sum(out * cot)
        assert f(feat).dtype == jnp.float64
        grad = np.asarray(jax.grad(f)(feat))
        f = jax.jit(f)
        eps = 1e-4
        fd = np.zeros_like(feat)
        for idx in np.ndindex(feat.shape):
            step = np.zeros_like(feat)
            step[idx] = eps
            fd[idx] = (f(feat + step) - f(feat - step)) / (2 * eps)
        assert np.abs(grad).max() > 0.1
        np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-9)
    print("ok")
""")


def test_feature_gradient_by_finite_differences():
    """float64 (jax x64, in a subprocess so that this process stays float32). RoIAlign is linear in
    the features, so central differences have no truncation error: only rounding, ~1e-16 * |f| /
    eps ~ 1e-11 here, and the tolerance 1e-9 leaves room for that."""
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", _GRAD_CHECK], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
