"""Localization losses, label assignment and post-processing against NumPy loop transcriptions
of ActionFormer's rules and hand-worked cases."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.localization import assign, losses, postprocess

INF = float("inf")


# ----------------------------------------------------------------------------- losses

def _reference_focal(x, t, alpha, gamma):
    """RetinaNet focal loss, one element at a time, in float64."""
    out = np.empty_like(x, dtype=np.float64)
    for i, (xi, ti) in enumerate(zip(x.ravel(), t.ravel())):
        p = 1.0 / (1.0 + math.exp(-xi))
        ce = -(ti * math.log(p) + (1.0 - ti) * math.log(1.0 - p))
        p_t = p * ti + (1.0 - p) * (1.0 - ti)
        loss = ce * (1.0 - p_t) ** gamma
        if alpha >= 0:
            loss *= alpha * ti + (1.0 - alpha) * (1.0 - ti)
        out.flat[i] = loss
    return out


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.5), (-1.0, 0.0)])
def test_focal_loss_matches_formula(alpha, gamma):
    rng = np.random.default_rng(0)
    x = rng.normal(scale=4.0, size=(3, 7)).astype(np.float32)
    t = rng.integers(0, 2, size=(3, 7)).astype(np.float32)
    t[0, :3] = (0.1, 0.5, 0.9)  # soft targets (label smoothing)
    got = np.asarray(losses.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t), alpha, gamma))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_focal(x, t, alpha, gamma), rtol=1e-5, atol=1e-7)


def test_focal_loss_gamma_zero_no_alpha_is_bce():
    x = jnp.asarray([-3.0, -0.5, 0.0, 2.0, 6.0])
    t = jnp.asarray([0.0, 1.0, 1.0, 0.0, 1.0])
    bce = -(t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))
    np.testing.assert_allclose(losses.sigmoid_focal_loss(x, t, alpha=-1.0, gamma=0.0), bce,
                               rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_finite_for_saturated_logits(gamma):
    x = jnp.asarray([-1e4, -100.0, 100.0, 1e4] * 2)
    t = jnp.asarray([0.0] * 4 + [1.0] * 4)
    loss = lambda v: losses.sigmoid_focal_loss(v, t, 0.25, gamma).sum()  # noqa: E731
    value, grad = jax.value_and_grad(loss)(x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def _reference_diou(pred, target, eps=1e-8):
    """DIoU of the intervals [-left, right] around a point at 0, from interval geometry."""
    out = np.empty(pred.shape[:-1])
    for idx in np.ndindex(out.shape):
        (lp, rp), (lg, rg) = pred[idx], target[idx]
        ps, pe, gs, ge = -lp, rp, -lg, rg
        inter = max(0.0, min(pe, ge) - max(ps, gs))
        union = (pe - ps) + (ge - gs) - inter
        enclosing = max(pe, ge) - min(ps, gs)
        centre_distance = 0.5 * (ps + pe) - 0.5 * (gs + ge)
        out[idx] = 1.0 - inter / max(union, eps) + (centre_distance / max(enclosing, eps)) ** 2
    return out


def test_diou_matches_formula():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0.0, 5.0, size=(4, 6, 2)).astype(np.float32)
    target = rng.uniform(0.0, 5.0, size=(4, 6, 2)).astype(np.float32)
    got = np.asarray(losses.diou_loss_1d(jnp.asarray(pred), jnp.asarray(target)))
    assert got.shape == (4, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_diou(pred, target), rtol=1e-5, atol=1e-6)


def test_diou_identical_is_zero_and_non_overlapping_above_one():
    same = jnp.asarray([[1.0, 3.0], [0.5, 0.5]])
    np.testing.assert_allclose(losses.diou_loss_1d(same, same), 0.0, atol=1e-7)
    # Both segments contain their shared point, so without overlap they only touch there:
    # [t-1, t] vs [t, t+3]: IoU 0, centres 2 apart, enclosing 4 -> 1 + (2/4)^2.
    got = losses.diou_loss_1d(jnp.asarray([1.0, 0.0]), jnp.asarray([0.0, 3.0]))
    np.testing.assert_allclose(got, 1.25, rtol=1e-6)


# ----------------------------------------------------------------------------- assignment

def test_feature_points_by_hand():
    points = assign.feature_points([4, 2], [1, 2], [(0.0, 4.0), (4.0, INF)])
    expected = np.asarray([[0, 0, 4, 1], [1, 0, 4, 1], [2, 0, 4, 1], [3, 0, 4, 1],
                           [0, 4, INF, 2], [2, 4, INF, 2]], np.float32)
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, expected)
    with pytest.raises(ValueError, match="one of each per level"):
        assign.feature_points([4, 2], [1], [(0.0, 4.0), (4.0, INF)])


@functools.partial(jax.jit, static_argnames=("num_classes", "center_sample"))
def _assign(points, segments, labels, valid, num_classes, center_sample):
    return assign.assign_targets(points, segments, labels, valid, num_classes,
                                 center_sample_radius=1.5, center_sample=center_sample)


def _run_assign(points, segments, labels, valid=None, num_classes=3, center_sample=False):
    segments = np.asarray(segments, np.float32)
    valid = np.ones(len(segments), bool) if valid is None else np.asarray(valid)
    out = _assign(points, segments, np.asarray(labels, np.int32), valid, num_classes,
                  center_sample)
    return tuple(np.asarray(o) for o in out)


def test_regression_ranges_pick_the_level():
    points = assign.feature_points([16, 8], [1, 2], [(0.0, 4.0), (4.0, INF)])
    level = points[:, 3]
    # [5, 9]: the longer end distance is <= 3 at every inside point, so level 0 only.
    _, reg, pos = _run_assign(points, [[5.0, 9.0]], [0])
    assert np.all(level[pos] == 1) and points[pos, 0].tolist() == [6, 7, 8]
    np.testing.assert_allclose(reg[pos], [[1, 3], [2, 2], [3, 1]])
    # [2, 14]: the longer end distance is >= 6 at every inside point, so level 1 only.
    _, reg, pos = _run_assign(points, [[2.0, 14.0]], [0])
    assert np.all(level[pos] == 2) and points[pos, 0].tolist() == [4, 6, 8, 10, 12]
    np.testing.assert_allclose(reg[pos], [[1, 5], [2, 4], [3, 3], [4, 2], [5, 1]])  # / stride 2


def test_centre_sampling_keeps_only_points_near_the_centre():
    segment, label = [[0.0, 40.0]], [1]
    dense = assign.feature_points([64], [1], [(0.0, INF)])
    _, _, pos = _run_assign(dense, segment, label, center_sample=False)
    assert dense[pos, 0].tolist() == list(range(1, 40))  # strictly inside
    cls, reg, pos = _run_assign(dense, segment, label, center_sample=True)
    assert dense[pos, 0].tolist() == [19, 20, 21]  # |t - 20| < 1.5
    np.testing.assert_array_equal(cls[pos], [[0, 1, 0]] * 3)
    np.testing.assert_allclose(reg[pos], [[19, 21], [20, 20], [21, 19]])
    coarse = assign.feature_points([32], [2], [(0.0, INF)])  # radius 1.5 * stride 2 = 3
    _, reg, pos = _run_assign(coarse, segment, label, center_sample=True)
    assert coarse[pos, 0].tolist() == [18, 20, 22]
    np.testing.assert_allclose(reg[pos], [[9, 11], [10, 10], [11, 9]])


def test_shortest_overlapping_segment_wins():
    points = assign.feature_points([24], [1], [(0.0, INF)])
    cls, reg, pos = _run_assign(points, [[0.0, 20.0], [8.0, 12.0]], [0, 1])
    t = points[:, 0]
    assert t[pos].tolist() == list(range(1, 20))
    in_short = (t > 8) & (t < 12)
    np.testing.assert_array_equal(cls[in_short], [[0, 1, 0]] * 3)
    np.testing.assert_allclose(reg[in_short], np.stack([t[in_short] - 8, 12 - t[in_short]], -1))
    only_long = pos & ~in_short
    np.testing.assert_array_equal(cls[only_long], [[1, 0, 0]] * int(only_long.sum()))
    np.testing.assert_allclose(reg[only_long], np.stack([t[only_long], 20 - t[only_long]], -1))
    assert not cls[~pos].any() and not reg[~pos].any()


def test_equal_lengths_give_a_multi_hot_target():
    points = assign.feature_points([16], [1], [(0.0, INF)])
    t = points[:, 0]
    # Lengths 6 and 6.0008: within the 1e-3 tolerance, both classes; the regression target is
    # the strictly shorter segment's.
    cls, reg, pos = _run_assign(points, [[4.0, 10.0], [4.0, 10.0008]], [0, 2])
    both = (t > 4) & (t < 10)
    assert t[pos].tolist() == [5, 6, 7, 8, 9, 10]  # t = 10 lies inside the second one only
    np.testing.assert_array_equal(cls[both], [[1, 0, 1]] * 5)
    np.testing.assert_allclose(reg[both], np.stack([t[both] - 4, 10 - t[both]], -1))
    np.testing.assert_array_equal(cls[t == 10], [[0, 0, 1]])
    # Lengths 6 and 6.01: beyond the tolerance, the shorter one's class only.
    cls, _, _ = _run_assign(points, [[4.0, 10.0], [4.0, 10.01]], [0, 2])
    np.testing.assert_array_equal(cls[both], [[1, 0, 0]] * 5)


def test_padded_segments_are_ignored():
    points = assign.feature_points([24], [1], [(0.0, INF)])
    alone = _run_assign(points, [[8.0, 12.0]], [1])
    padded = _run_assign(points, [[8.0, 12.0], [0.0, 20.0], [0.0, 0.0]], [1, 0, -1],
                         valid=[True, False, False])
    for a, b in zip(alone, padded):
        np.testing.assert_array_equal(a, b)
    cls, reg, pos = _run_assign(points, [[8.0, 12.0], [0.0, 20.0]], [1, 0], valid=[False, False])
    assert not cls.any() and not reg.any() and not pos.any()


def _reference_assign(points, segments, labels, valid, num_classes, radius, center_sample):
    """ActionFormer's label_points_single_video, one point and one segment at a time."""
    cls = np.zeros((len(points), num_classes), np.float32)
    reg = np.zeros((len(points), 2), np.float32)
    for p, (t, lo, hi, stride) in enumerate(points):
        candidates = []
        for n, ((start, end), label) in enumerate(zip(segments, labels)):
            if not valid[n]:
                continue
            left, right = t - start, end - t
            if center_sample:
                centre = 0.5 * (start + end)
                t_min = max(centre - radius * stride, start)
                t_max = min(centre + radius * stride, end)
                inside = t - t_min > 0 and t_max - t > 0
            else:
                inside = left > 0 and right > 0
            if inside and lo <= max(left, right) <= hi:
                candidates.append((end - start, n, left, right, label))
        if not candidates:
            continue
        shortest = min(c[0] for c in candidates)
        for length, _, _, _, label in candidates:
            if length <= shortest + 1e-3:
                cls[p, label] = 1.0
        _, _, left, right, _ = min(candidates, key=lambda c: (c[0], c[1]))
        reg[p] = (left / stride, right / stride)
    return cls, reg, cls.any(axis=1)


@pytest.mark.parametrize("center_sample", [True, False])
def test_assignment_matches_loop_reference_on_random_videos(center_sample):
    points = assign.feature_points([48, 24, 12], [1, 2, 4], [(0, 4), (4, 12), (12, INF)])
    rng = np.random.default_rng(2 + center_sample)
    batch, num_segments, num_classes = 6, 7, 4
    # Ends on a quarter-step grid: boundaries, centres and lengths are exact in float32 and
    # float64, so points exactly on a boundary and exactly equal lengths occur and agree.
    starts = rng.integers(0, 160, size=(batch, num_segments)) / 4.0
    lengths = rng.integers(1, 120, size=(batch, num_segments)) / 4.0
    lengths[:, 1] = lengths[:, 0]  # equal-length overlapping pairs: multi-hot targets
    starts[:, 1] = starts[:, 0] + rng.integers(0, 3, size=batch) / 4.0
    segments = np.stack([starts, starts + lengths], -1).astype(np.float32)  # (B, N, 2)
    labels = rng.integers(0, num_classes, size=(batch, num_segments)).astype(np.int32)
    valid = rng.random((batch, num_segments)) < 0.8
    run = jax.jit(jax.vmap(
        lambda s, l, v: assign.assign_targets(points, s, l, v, num_classes, 1.5, center_sample)))
    cls, reg, pos = (np.asarray(o) for o in run(segments, labels, valid))
    assert cls.shape == (batch, len(points), num_classes) and reg.shape == (batch, len(points), 2)
    assert pos.any() and (cls.sum(-1) > 1).any()
    for b in range(batch):
        ref_cls, ref_reg, ref_pos = _reference_assign(points, segments[b], labels[b], valid[b],
                                                      num_classes, 1.5, center_sample)
        np.testing.assert_array_equal(cls[b], ref_cls)
        np.testing.assert_array_equal(pos[b], ref_pos)
        np.testing.assert_allclose(reg[b], ref_reg, rtol=1e-6)


def test_assign_rejects_mismatched_shapes():
    points = assign.feature_points([8], [1], [(0.0, INF)])
    with pytest.raises(ValueError, match="need"):
        assign.assign_targets(points, jnp.zeros((3, 2)), jnp.zeros((2,), jnp.int32),
                              jnp.ones((3,), bool), 3)


# ----------------------------------------------------------------------------- post-processing

def test_decode_segments():
    points = assign.feature_points([2, 1], [1, 4], [(0, 4), (4, INF)])
    offsets = np.asarray([[0.5, 1.0], [2.0, 0.0], [1.0, 0.25]], np.float32)
    np.testing.assert_allclose(postprocess.decode_segments(points, offsets),
                               [[-0.5, 1.0], [-1.0, 1.0], [-4.0, 1.0]])


def test_select_candidates_top_k_per_level_and_thresholds():
    points = assign.feature_points([4, 2], [1, 2], [(0, 4), (4, INF)])
    probs = np.asarray([[0.9, 0.001],    # level 0; 0.001 is not above the threshold
                        [0.2, 0.8],
                        [0.95, 0.0],     # invalid point
                        [0.7, 0.85],     # zero duration
                        [0.3, 0.4],      # level 1
                        [0.6, 0.05]], np.float32)
    offsets = np.ones((6, 2), np.float32)
    offsets[3] = 0.0
    valid = np.asarray([True, True, False, True, True, True])
    segments, scores, labels = postprocess.select_candidates(
        probs, offsets, points, valid, pre_nms_topk=2, score_threshold=0.001, min_duration=0.05)
    # Level 0 top 2 among the valid pairs: (3, 1) 0.85 and (0, 0) 0.9 -> (3, 1) dropped for its
    # zero duration after the top-k; level 1 top 2: (5, 0) 0.6, (4, 1) 0.4.
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.4])
    np.testing.assert_array_equal(labels, [0, 0, 1])
    np.testing.assert_allclose(segments, [[-1, 1], [0, 4], [-2, 2]])
    explicit = postprocess.select_candidates(probs, offsets, points, valid, pre_nms_topk=2,
                                             level_lengths=[4, 2])
    for a, b in zip(explicit, (segments, scores, labels)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="sum to 5"):
        postprocess.select_candidates(probs, offsets, points, valid, level_lengths=[4, 1])


def test_select_candidates_threshold_is_strict():
    points = assign.feature_points([3], [1], [(0, INF)])
    probs = np.asarray([[0.5], [0.2], [0.1]], np.float32)
    _, scores, _ = postprocess.select_candidates(probs, np.ones((3, 2)), points,
                                                 np.ones(3, bool), score_threshold=0.2)
    np.testing.assert_allclose(scores, [0.5])


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _reference_soft_nms(segments, scores, labels, sigma, min_score, max_segments, agnostic):
    """Gaussian Soft-NMS with Python lists, float64."""
    groups = [list(range(len(scores)))] if agnostic else \
        [[i for i in range(len(scores)) if labels[i] == c] for c in sorted(set(labels))]
    kept = []
    for group in groups:
        live = {i: float(scores[i]) for i in group if scores[i] >= min_score}
        while live:
            best = max(live, key=lambda i: (live[i], -i))
            kept.append((live.pop(best), best))
            for i in list(live):
                live[i] *= math.exp(-_iou(segments[best], segments[i]) ** 2 / sigma)
                if live[i] < min_score:
                    del live[i]
    kept.sort(key=lambda k: -k[0])
    kept = kept[:max_segments]
    return np.asarray([s for s, _ in kept]), np.asarray([i for _, i in kept], np.int64)


@pytest.mark.parametrize("agnostic", [False, True])
def test_soft_nms_matches_loop_reference(agnostic):
    rng = np.random.default_rng(4)
    starts = rng.uniform(0, 50, size=60)
    segments = np.stack([starts, starts + rng.uniform(0.5, 15, size=60)], -1).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, size=60).astype(np.float32)
    labels = rng.integers(0, 3, size=60)
    ref_scores, ref_idx = _reference_soft_nms(segments.astype(np.float64), scores, labels, 0.5,
                                              0.05, 25, agnostic)
    got_segments, got_scores, got_labels = postprocess.soft_nms(
        segments, scores, labels, sigma=0.5, min_score=0.05, max_segments=25,
        class_agnostic=agnostic)
    assert len(got_scores) == len(ref_scores) == 25
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-5)
    np.testing.assert_array_equal(got_segments, segments[ref_idx])
    np.testing.assert_array_equal(got_labels, labels[ref_idx])


def test_soft_nms_decays_the_overlapping_segment_by_the_gaussian():
    segments = np.asarray([[5.0, 15.0], [0.0, 10.0]], np.float32)
    _, scores, _ = postprocess.soft_nms(segments, [0.8, 0.9], [0, 0], sigma=0.5)
    iou = 5.0 / 15.0
    np.testing.assert_allclose(scores, [0.9, 0.8 * math.exp(-iou ** 2 / 0.5)], rtol=1e-6)


def test_soft_nms_class_wise_versus_agnostic():
    segments = np.asarray([[0.0, 10.0], [5.0, 15.0]], np.float32)
    _, class_wise, labels = postprocess.soft_nms(segments, [0.9, 0.8], [0, 1])
    np.testing.assert_allclose(class_wise, [0.9, 0.8])
    np.testing.assert_array_equal(labels, [0, 1])
    _, agnostic, _ = postprocess.soft_nms(segments, [0.9, 0.8], [0, 1], class_agnostic=True)
    np.testing.assert_allclose(agnostic, [0.9, 0.8 * math.exp(-(1 / 3) ** 2 / 0.5)], rtol=1e-6)


def test_soft_nms_caps_and_sorts_over_all_classes():
    segments = np.stack([np.arange(10) * 10.0, np.arange(10) * 10.0 + 5.0], -1)  # disjoint
    scores = np.linspace(0.1, 1.0, 10)
    labels = np.arange(10) % 2
    got_segments, got_scores, got_labels = postprocess.soft_nms(segments, scores, labels,
                                                                max_segments=3)
    np.testing.assert_allclose(got_scores, [1.0, 0.9, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(got_labels, [1, 0, 1])
    np.testing.assert_array_equal(got_segments, segments[[9, 8, 7]])


def test_soft_nms_drops_segments_decayed_below_min_score():
    segments = np.asarray([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0]], np.float32)
    # The duplicate is decayed by exp(-1 / 0.5) ~ 0.135: 0.005 -> 0.00068 < 0.001.
    _, scores, _ = postprocess.soft_nms(segments, [0.9, 0.005, 0.0005], [0, 0, 0])
    np.testing.assert_allclose(scores, [0.9])


def test_hard_nms_removes_at_or_above_the_iou_threshold():
    segments = np.asarray([[0.0, 10.0], [0.0, 5.0]], np.float32)  # IoU 0.5
    _, scores, _ = postprocess.soft_nms(segments, [0.9, 0.8], [0, 0], method="hard",
                                        iou_threshold=0.5)
    np.testing.assert_allclose(scores, [0.9])
    _, scores, _ = postprocess.soft_nms(segments, [0.9, 0.8], [0, 0], method="hard",
                                        iou_threshold=0.6)
    np.testing.assert_allclose(scores, [0.9, 0.8])
    with pytest.raises(ValueError, match="method"):
        postprocess.soft_nms(segments, [0.9, 0.8], [0, 0], method="linear")


def test_soft_nms_of_nothing_is_empty():
    segments, scores, labels = postprocess.soft_nms(np.zeros((0, 2)), np.zeros(0),
                                                    np.zeros(0, np.int64))
    assert segments.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)
