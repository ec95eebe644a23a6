"""Linear probe: the fitted classifier is the optimum of its objective (NumPy gradient), and it
separates separable features."""
import numpy as np

from internvideo_jax import linear_probe


def _numpy_gradient(x, y, w, b, l2):
    """Gradient of mean CE(x w + b, y) + l2/2 |w|^2, written out in NumPy."""
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return x.T @ p / len(y) + l2 * w, p.mean(0)


def test_fit_reaches_the_stationary_point_of_the_regularised_objective():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = rng.integers(0, 3, size=120)  # random labels: the optimum is interior, not at infinity
    w, b = linear_probe.fit_logistic(x, y, 3, l2=0.1)
    gw, gb = _numpy_gradient(x, y, w.astype(np.float64), b.astype(np.float64), 0.1)
    assert np.abs(gw).max() < 1e-4 and np.abs(gb).max() < 1e-4
    assert np.abs(w).max() > 1e-3  # and it is not the trivial start


def test_probe_separates_clustered_features_and_averages_views():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 3
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(size=(120, 16))
    test_y = np.repeat(np.arange(4), 5)
    views = centres[test_y][:, None] + rng.normal(size=(20, 3, 16))  # 3 views per video
    scores, l2 = linear_probe.probe(x, y, views, 4)
    assert l2 in linear_probe.L2_GRID
    assert scores.shape == (20, 4)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    assert (scores.argmax(1) == test_y).mean() == 1.0
