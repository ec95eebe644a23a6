"""The embedded untrimmed dataset (temporal action localization): deterministic videos whose
labelled segments are where, and only where, the shape moves; its ActivityNet-style ground truth;
routing by open_source."""
import json
import os

import numpy as np
import pytest

from input_pipelines import decode, sources, synthetic_untrimmed as su
from input_pipelines.synthetic_videos import CLASSES, COLOURS, encode_mp4

SMALL = sources.UNTRIMMED_CONFIGS["small"]
FPS = 25


@pytest.fixture(scope="module")
def untrimmed_dir(tmp_path_factory):
    """A data directory holding the small untrimmed dataset (8 train / 4 validation videos)."""
    path = str(tmp_path_factory.mktemp("untrimmed"))
    sources.demo_untrimmed_source("train", "small", path)
    return path


def _small_records(data_dir: str) -> list[tuple[str, dict]]:
    return [(subset, ex) for split, subset in sources.UNTRIMMED_SUBSETS.items()
            for ex in sources.demo_untrimmed_source(split, "small", data_dir)]


def _plan_of(video_id: str) -> su.UntrimmedPlan:
    """The plan of a small-config video, from its id 'untrimmed_<seed>_<index>'."""
    seed, index = map(int, video_id.split("_")[1:])
    return su.sample_plan(np.random.default_rng([seed, index]), SMALL["size"], SMALL["fps"],
                          SMALL["min_seconds"], SMALL["max_seconds"])


def _centroids(frames: np.ndarray, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) (y, x) centroids in pixels and (T,) areas in pixels of the pixels within 60 (RGB
    distance) of the shape's colour. Background pixels of about that colour add a static blob:
    it weakens displacements but moves nothing."""
    mask = np.linalg.norm(frames.astype(np.float32) - np.asarray(colour, np.float32), axis=-1) < 60
    area = mask.sum(axis=(1, 2))
    assert area.min() > 0
    yy, xx = np.mgrid[0:frames.shape[1], 0:frames.shape[2]] + 0.5
    return np.stack([(mask * yy).sum((1, 2)) / area, (mask * xx).sum((1, 2)) / area], 1), area


def _rests(plan: su.UntrimmedPlan) -> list[tuple[int, int]]:
    """[first, last + 1) frames of each interval without motion."""
    bounds = [0] + [f for m in plan.motions for f in (m.start, m.start + m.length)]
    bounds.append(plan.num_frames)
    return [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b > a]


def _assert_rests(centres: np.ndarray, plan: su.UntrimmedPlan) -> None:
    """Within each rest the centroid stays within 1.5 pixels of its median there."""
    for a, b in _rests(plan):
        deviation = np.abs(centres[a:b] - np.median(centres[a:b], axis=0)).max()
        assert deviation <= 1.5, (a, b, deviation)


def test_same_bytes_twice():
    a = su.make_untrimmed_example(7, 3, min_seconds=6, max_seconds=8)
    b = su.make_untrimmed_example(7, 3, min_seconds=6, max_seconds=8)
    assert a == b
    assert a["video_id"] == "untrimmed_7_00003" and a["label"] == -1
    assert a["duration"] == a["num_frames"] / a["fps"]
    assert su.make_untrimmed_example(7, 4, min_seconds=6, max_seconds=8)["video"] != a["video"]


@pytest.mark.parametrize("seconds", [(8, 16), (6, 8)])
def test_segments_and_trajectories(seconds):
    counts, size = set(), 80
    for index in range(300):
        plan = su.sample_plan(np.random.default_rng([11, index]), size, FPS, *seconds)
        assert seconds[0] * FPS <= plan.num_frames <= seconds[1] * FPS
        assert 1 <= len(plan.motions) <= 3
        counts.add(len(plan.motions))
        ends = [0]
        for (start_s, end_s, label), m in zip(plan.segments, plan.motions):
            assert start_s >= ends[-1] + (su.MIN_GAP_S if len(ends) > 1 else 0) - 1e-9
            assert su.MIN_SEGMENT_S - 1e-9 <= end_s - start_s <= su.MAX_SEGMENT_S + 1e-9
            assert end_s <= plan.num_frames / FPS + 1e-9
            assert not (CLASSES[label].startswith("rotating") and plan.shape == "circle")
            ends.append(end_s)
        centres, radii, angles = su.trajectory(plan)
        # Fully inside the frame (with room for the jitter), radii in a sane range.
        assert (centres - radii[:, None] >= 1.0).all()
        assert (centres + radii[:, None] <= size - 1.0).all()
        assert (0.06 * size - 1e-6 <= radii).all() and (radii <= 0.26 * size + 1e-6).all()
        state = np.concatenate([centres, radii[:, None], angles[:, None]], axis=1)
        change = np.abs(np.diff(state, axis=0)).max(axis=1)  # change[t]: frame t to t + 1
        moving = np.zeros(plan.num_frames, bool)
        for m in plan.motions:
            moving[m.start:m.start + m.length] = True
        assert (change[~moving[1:]] == 0).all()  # no change into a frame that rests
        assert (change[moving[1:]] > 0).all()
    assert counts == {1, 2, 3}


def test_decoded_video_rests_and_moves_right():
    # A red square on grey (R - G is 0 there): a clean colour mask; jitter at its largest.
    motion = su.Motion(start=40, length=35, label=CLASSES.index("moving right"), rate=1.2)
    plan = su.UntrimmedPlan(shape="square", colour="red", background=(90, 90, 90),
                            num_frames=120, fps=FPS, centre=(40.0, 20.0), radius=8.0, angle=10.0,
                            jitter_px=0.5, jitter_deg=1.5, motions=(motion,))
    frames = su.render_untrimmed(plan, 80, np.random.default_rng(0))
    decoded = decode.decode_frames(encode_mp4(frames, fps=FPS), np.arange(plan.num_frames))
    centres, _ = _centroids(decoded, COLOURS["red"])
    _assert_rests(centres, plan)
    assert np.abs(np.diff(centres[:40], axis=0)).max() <= 1.5
    assert np.abs(np.diff(centres[75:], axis=0)).max() <= 1.5
    inside = centres[39:75]  # the last resting frame, then the 35 that move
    assert np.abs(inside[:, 0] - 40).max() <= 1.5  # no vertical motion
    assert (np.diff(inside[::5, 1]) > 0).all()  # x increases
    assert inside[-1, 1] - inside[0, 1] == pytest.approx(1.2 * 35, abs=1.5)


def test_small_config_videos_show_their_segments(untrimmed_dir):
    moving_checked = 0
    for _, ex in _small_records(untrimmed_dir):
        plan = _plan_of(ex["video_id"].decode())
        np.testing.assert_allclose(ex["segments"], np.reshape(plan.segments, (-1, 3)), atol=1e-5)
        frames = decode.decode_frames(ex["video"], np.arange(int(ex["num_frames"])))
        centres, _ = _centroids(frames, COLOURS[plan.colour])
        _assert_rests(centres, plan)
        for m in plan.motions:
            cls = CLASSES[m.label]
            if cls in su._DIRECTIONS:
                shift = centres[m.start + m.length - 1] - centres[max(m.start - 1, 0)]
                along = np.dot(shift, su._DIRECTIONS[cls])
                assert along == pytest.approx(m.rate * m.length, rel=0.2), (ex["video_id"], cls)
                moving_checked += 1
    assert moving_checked >= 4


def test_ground_truth_matches_the_records(untrimmed_dir):
    path = sources.demo_untrimmed_ground_truth("small", untrimmed_dir)
    assert os.path.dirname(path).endswith(os.path.join("demo_untrimmed", "small", "1.0.0"))
    with open(path) as f:
        truth = json.load(f)
    assert truth["taxonomy"] == [] and "1.0.0" in truth["version"]
    database = truth["database"]
    subsets = [v["subset"] for v in database.values()]
    assert subsets.count("training") == SMALL["num_train"]
    assert subsets.count("validation") == SMALL["num_validation"]
    # The same as from freshly generated examples (the bytes too: the build is deterministic).
    regenerated = []
    for subset, record in _small_records(untrimmed_dir):
        seed, index = map(int, record["video_id"].decode().split("_")[1:])
        ex = su.make_untrimmed_example(seed, index, SMALL["size"], SMALL["fps"],
                                       SMALL["min_seconds"], SMALL["max_seconds"])
        assert ex["video"] == record["video"]
        regenerated.append((subset, ex))
    assert su.ground_truth(regenerated, truth["version"]) == truth
    for subset, ex in regenerated:
        entry = database[ex["video_id"]]
        assert entry["duration"] == pytest.approx(ex["num_frames"] / FPS)
        np.testing.assert_allclose([a["segment"] for a in entry["annotations"]],
                                   [[s, e] for s, e, _ in ex["segments"]], atol=1e-9)
        assert [a["label"] for a in entry["annotations"]] == [CLASSES[c] for *_, c in
                                                             ex["segments"]]
    # Written once.
    mtime = os.stat(path).st_mtime_ns
    assert sources.demo_untrimmed_ground_truth("small", untrimmed_dir) == path
    assert os.stat(path).st_mtime_ns == mtime


def test_open_source_routes_demo_untrimmed(untrimmed_dir, monkeypatch):
    source = sources.open_source("demo_untrimmed/small", "validation", untrimmed_dir)
    assert len(source) == SMALL["num_validation"]
    ex = source[0]
    assert ex["label"] == -1 and ex["segments"].shape[1] == 3 and ex["segments"].dtype == np.float32
    with pytest.raises(ValueError, match="demo_untrimmed"):
        sources.open_source("demo_untrimmed/nope", "train", untrimmed_dir)
    calls = []
    monkeypatch.setattr(sources, "demo_source", lambda *a: calls.append(("demo", *a)))
    monkeypatch.setattr(sources, "demo_untrimmed_source",
                        lambda *a: calls.append(("untrimmed", *a)))
    for name in ("demo", "demo/small", "demo_untrimmed", "demo_untrimmed/small"):
        sources.open_source(name, "train", "/d")
    assert calls == [("demo", "train", "default", "/d"), ("demo", "train", "small", "/d"),
                     ("untrimmed", "train", "default", "/d"),
                     ("untrimmed", "train", "small", "/d")]
