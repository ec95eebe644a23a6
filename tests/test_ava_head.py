"""AVA head and detector: shapes, regional tokens, padded boxes, checkpoint paths shared with the
VideoMAE classifier and pretraining models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from internvideo_jax.models import videomae
from internvideo_jax.models.ava_head import AVAHead, VideoMAEDetector

TINY = videomae.SIZES["tiny"]  # patch 8, tubelet 2, dim 128
VIDEO_SHAPE = (2, 4, 32, 48, 3)  # token grid (2, 4, 6): a non-square frame, as AVA's test frames
BOXES = np.array([[[0.0, 0.0, 48.0, 32.0], [4.0, 6.0, 20.0, 30.0], [30.0, 2.0, 47.0, 15.0]],
                  [[10.0, 10.0, 12.0, 12.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 40.0, 31.0]]],
                 np.float32)  # (B, M, 4) [x1, y1, x2, y2] in input pixels


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(nn.meta.unbox(tree), sep="/")


@pytest.fixture(scope="module")
def detector_and_params():
    model = VideoMAEDetector(TINY, num_classes=5)
    video = jax.random.normal(jax.random.key(1), VIDEO_SHAPE)
    variables = model.init(jax.random.key(0), video, BOXES)
    return model, variables, video


def test_detector_shapes_and_parameter_names(detector_and_params):
    model, variables, video = detector_and_params
    logits = model.apply(variables, video, BOXES)
    assert logits.shape == (2, 3, 5) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    flat = _flat(variables["params"])
    assert {k for k in flat if not k.startswith("encoder/")} == {"head/kernel", "head/bias"}
    assert flat["head/kernel"].shape == (TINY.dim, 5) and flat["head/bias"].shape == (5,)
    specs = traverse_util.flatten_dict(nn.get_partition_spec(variables["params"]), sep="/")
    assert tuple(specs["head/kernel"]) == ("embed", "vocab")
    assert tuple(specs["head/bias"]) == ("vocab",)
    # the reference's init: trunc_normal(0.02) * 0.001, zero bias
    assert 0 < np.abs(flat["head/kernel"]).max() <= 2 * 0.02 * 0.001
    assert not np.asarray(flat["head/bias"]).any()


def test_jit_and_dropout(detector_and_params):
    _, variables, video = detector_and_params
    model = VideoMAEDetector(TINY, num_classes=5, dropout=0.5)
    eager = model.apply(variables, video, BOXES)
    jitted = jax.jit(model.apply)(variables, video, BOXES)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
    train = model.apply(variables, video, BOXES, deterministic=False,
                        rngs={"dropout": jax.random.key(3)})
    assert np.abs(np.asarray(train) - np.asarray(eager)).max() > 1e-6


def _regional_tokens(left: np.ndarray, right: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    """(1, N, D) tokens on a (2, 4, 6) grid: cells w < 3 hold `left`, w >= 3 hold `right`, plus
    +wobble at t = 0 and -wobble at t = 1 (gone in the time mean)."""
    grid = np.zeros((2, 4, 6, left.shape[0]))
    grid[:, :, :3] = left
    grid[:, :, 3:] = right
    grid[0] += wobble
    grid[1] -= wobble
    return grid.reshape(1, -1, left.shape[0]).astype(np.float32)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_box_inside_one_region_sees_only_that_region(pool):
    """Patch 8: cell w < 3 is x < 24 px with aligned=False. A box with x2 <= 16 px samples
    x < 2 cells, so every bilinear read is from cells 0..2: its logits are left @ kernel + bias,
    whatever the right region and the per-frame wobble hold."""
    rng = np.random.default_rng(0)
    d, k = 4, 3
    left, right, wobble = rng.normal(size=d), rng.normal(size=d), rng.normal(size=d)
    head = AVAHead(k, pool=pool)
    boxes = np.array([[[1.0, 2.0, 16.0, 30.0]]], np.float32)  # (1, 1, 4)
    tokens = _regional_tokens(left, right, wobble)
    kernel = rng.normal(size=(d, k)).astype(np.float32)
    bias = rng.normal(size=k).astype(np.float32)
    params = {"params": {"kernel": kernel, "bias": bias}}
    got = head.apply(params, tokens, (2, 4, 6), boxes, 8)
    np.testing.assert_allclose(np.asarray(got)[0, 0], left @ kernel + bias, atol=1e-5)
    other = head.apply(params, _regional_tokens(left, -3 * right, 2 * wobble), (2, 4, 6), boxes, 8)
    np.testing.assert_allclose(np.asarray(other), np.asarray(got), atol=1e-5)
    # a box over both regions does see the right one
    both = np.array([[[1.0, 2.0, 47.0, 30.0]]], np.float32)
    a = head.apply(params, tokens, (2, 4, 6), both, 8)
    b = head.apply(params, _regional_tokens(left, -3 * right, wobble), (2, 4, 6), both, 8)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_max_pool_takes_the_larger_region():
    """pool='max' over the 7x7 bins: a box over both regions, channels where `right` is larger
    give `right` (bins lying wholly in the right region), the others give `left`."""
    left = np.array([1.0, 5.0, -2.0, 0.0])
    right = np.array([3.0, -1.0, 4.0, 0.0])
    tokens = _regional_tokens(left, right, np.zeros(4))
    head = AVAHead(4)
    boxes = np.array([[[0.0, 0.0, 48.0, 32.0]]], np.float32)
    params = {"params": {"kernel": np.eye(4, dtype=np.float32), "bias": np.zeros(4, np.float32)}}
    got = head.apply(params, tokens, (2, 4, 6), boxes, 8)
    np.testing.assert_allclose(np.asarray(got)[0, 0], np.maximum(left, right), atol=1e-5)


def test_padding_boxes_do_not_change_the_real_ones(detector_and_params):
    model, variables, video = detector_and_params
    real = BOXES[:, :2]
    padded = np.concatenate([real, np.zeros((2, 4, 4), np.float32)], axis=1)  # (2, 6, 4)
    a = model.apply(variables, video, real)
    b = model.apply(variables, video, padded)
    assert b.shape == (2, 6, 5)
    np.testing.assert_allclose(np.asarray(b)[:, :2], np.asarray(a), atol=1e-6)


def test_classifier_and_pretraining_encoders_load_by_path(detector_and_params):
    """A VideoMAEClassifier's encoder/ is the detector's less encoder/norm (the reference keeps
    `norm` at its init for a fine-tuned checkpoint); a VideoMAEPretrain's encoder/ is the
    detector's exactly. Loaded by path, the detector's tokens are the classifier's tokens under a
    LayerNorm with the init scale and bias."""
    model, variables, video = detector_and_params
    det = _flat(variables["params"])
    clf_model = videomae.VideoMAEClassifier(TINY, num_classes=7)
    clf_vars = clf_model.init(jax.random.key(5), video)
    clf = _flat(clf_vars["params"])
    clf_enc = {k: v for k, v in clf.items() if k.startswith("encoder/")}
    det_enc = {k: v for k, v in det.items() if k.startswith("encoder/")}
    assert set(det_enc) - set(clf_enc) == {"encoder/norm/scale", "encoder/norm/bias"}
    assert set(clf_enc) <= set(det_enc)
    assert all(clf_enc[k].shape == det_enc[k].shape for k in clf_enc)
    n = videomae.token_grid(VIDEO_SHAPE, TINY)
    pre_vars = jax.eval_shape(videomae.VideoMAEPretrain(TINY, mask_ratio=0.5).init,
                              jax.random.key(0), video, jnp.zeros((2, int(np.prod(n))), bool))
    pre = _flat(pre_vars["params"])
    pre_enc = {k: v.shape for k, v in pre.items() if k.startswith("encoder/")}
    assert pre_enc == {k: v.shape for k, v in det_enc.items()}

    loaded = dict(det, **clf_enc)
    loaded = {"params": traverse_util.unflatten_dict(loaded, sep="/")}
    tokens = model.apply(loaded, video, method=VideoMAEDetector.tokens)
    raw = np.asarray(clf_model.apply(clf_vars, video, method=videomae.VideoMAEClassifier.tokens),
                     np.float64)
    mean = raw.mean(-1, keepdims=True)
    want = (raw - mean) / np.sqrt(raw.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(tokens), want, atol=1e-4)
    logits = model.apply(loaded, video, BOXES)
    assert not np.allclose(np.asarray(logits), np.asarray(model.apply(variables, video, BOXES)))


def test_refuses_a_grid_the_tokens_do_not_fill():
    head = AVAHead(3)
    with pytest.raises(ValueError, match=r"48 tokens do not fill the \(2, 4, 5\) grid"):
        head.init(jax.random.key(0), jnp.zeros((1, 48, 4)), (2, 4, 5), BOXES[:1], 8)
    with pytest.raises(ValueError, match="Unknown pool 'sum'"):
        AVAHead(3, pool="sum").init(jax.random.key(0), jnp.zeros((1, 48, 4)), (2, 4, 6),
                                    BOXES[:1], 8)
