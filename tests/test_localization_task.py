"""The localization task's data path and inference by hand, and a tiny training run end to end:
features -> head -> ActivityNet results that the `score` command scores alike."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from internvideo_jax.localization import data as loc_data
from internvideo_jax.localization import features
from tests.helpers import REPO, apply_overrides


def test_seconds_and_steps_by_hand():
    # clips of 16 frames every 4 at 30 fps: feature i at (4 i + 8) / 30 s, and a time t is
    # ActionFormer's (t * fps - 16 / 2) / 4 feature steps
    times = (4 * np.arange(50) + 8) / 30
    t = np.array([0.0, 0.1, 1.0, 3.3, 7.0, 9.0])  # 9 s lies beyond the last feature (6.8 s)
    steps = loc_data.steps_from_seconds(t, times)
    np.testing.assert_allclose(steps, (t * 30 - 8) / 4, atol=1e-9)
    np.testing.assert_allclose(loc_data.seconds_from_steps(steps, times), t, atol=1e-9)


def test_resize_sequence_is_linear_with_align_corners_false():
    feats = np.array([[0.0], [10.0], [20.0], [30.0]], np.float32)
    times = np.array([1.0, 2.0, 3.0, 4.0])
    out, out_times = loc_data.resize_sequence(feats, times, 8)
    # source position of output j: (j + 0.5) * 4 / 8 - 0.5 = j / 2 - 0.25, clamped to [0, 3]
    x = np.clip(np.arange(8) / 2 - 0.25, 0, 3)
    np.testing.assert_allclose(out[:, 0], 10 * x, rtol=1e-6)
    np.testing.assert_allclose(out_times, 1 + x, rtol=1e-6)
    down, _ = loc_data.resize_sequence(feats, times, 2)  # positions 0.5 and 2.5
    np.testing.assert_allclose(down[:, 0], [5.0, 25.0])


def test_truncation_keeps_segments_mostly_inside_the_window():
    sample = loc_data.SequenceSample(max_len=10, max_segments=4, trunc_thresh=0.5)
    feats = np.arange(40, dtype=np.float32)[:, None]
    segments = np.array([[2.0, 6.0], [12.0, 16.0], [30.0, 38.0]])
    labels = np.array([0, 1, 2], np.int32)
    for seed in range(20):
        f, s, lab = sample._truncate(feats, segments, labels, np.random.default_rng(seed))
        start = int(f[0, 0])
        assert f.shape == (10, 1) and np.all(f[:, 0] == np.arange(start, start + 10))
        for (a, b), c in zip(segments, labels):
            inside = max(0.0, min(b, start + 10) - max(a, start)) / (b - a)
            kept = c in lab
            assert kept == (inside >= 0.5)
            if kept:  # clipped to the window, in the window's steps
                got = s[list(lab).index(c)]
                np.testing.assert_allclose(got, [max(a, start) - start, min(b, start + 10) - start])
    out = sample.pad(feats[:7], segments[:2], labels[:2])
    assert out["features"].shape == (1, 10, 1) and out["mask"][0].tolist() == [True] * 7 + [False] * 3
    assert out["segment_mask"][0].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="max_segments"):
        sample.pad(feats, np.zeros((5, 2)), np.zeros(5, np.int32))


def test_fusion_with_video_scores_by_hand():
    from internvideo_jax.tasks.localization import fuse_video_scores
    segments = np.array([[0.0, 1.0], [2.0, 3.0]])
    probs = np.array([0.1, 0.6, 0.3])
    segs, scores, labels = fuse_video_scores(segments, np.array([0.8, 0.5]), probs, top_k=2)
    np.testing.assert_array_equal(labels, [1, 1, 2, 2])
    np.testing.assert_array_equal(segs, np.concatenate([segments, segments]))
    np.testing.assert_allclose(scores, np.sqrt([0.6 * 0.8, 0.6 * 0.5, 0.3 * 0.8, 0.3 * 0.5]))


CLASSES = ("jump", "run")


def _synthetic_features(root: str, num_videos: int = 12, length: int = 40, dim: int = 8):
    """Features where an action is visible: channel c is 1 inside segments of class c; noise."""
    rng = np.random.default_rng(0)
    database, parts = {}, {"train": []}
    os.makedirs(os.path.join(root, "parts"), exist_ok=True)
    for i in range(num_videos):
        vid = f"video_{i}"
        times = (np.arange(length) + 0.5) / 2.0  # 2 features per second
        feats = rng.normal(0, 0.1, (length, dim)).astype(np.float32)
        annotations = []
        for k, start in enumerate(rng.choice(np.arange(2, 30, 9), 2, replace=False)):
            c, n = int(rng.integers(2)), int(rng.integers(4, 8))
            feats[start:start + n, c] += 1.0
            annotations.append({"segment": [float(start) / 2, float(start + n) / 2],
                                "label": CLASSES[c]})
        database[vid] = {"subset": "training" if i < 8 else "validation",
                         "duration": length / 2.0, "annotations": annotations}
        path = os.path.join(root, "parts", f"{i:08d}.npz")
        np.savez(path, video_id=np.asarray(vid), times=times.astype(np.float32),
                 fps=np.float32(25), duration=np.float32(length / 2), num_frames=np.int32(500),
                 features=feats)
        parts["train"].append(path)
    out = features.pack(root, "synthetic", parts, {"classes": None})
    gt = os.path.join(root, "gt.json")
    with open(gt, "w") as f:
        json.dump({"version": "test", "taxonomy": [], "database": database}, f)
    return out, gt


def test_training_and_evaluation_end_to_end(tmp_path):
    from experiments.localization import get_config
    from internvideo_jax.training import train
    from internvideo_jax.training.metrics_writer import read_metrics
    feats, gt = _synthetic_features(str(tmp_path / "features"))
    config = apply_overrides(get_config("tiny"), {
        "data.features": feats, "data.ground_truth": gt, "data.max_len": 32,
        "model.size": "tiny", "model.num_classes": 2, "batch_size": 8, "total_steps": 40,
        "log_every": 5, "checkpoint_every": 40, "optim.warmup_epochs": 1.0,
        "optim.base_lr": 2e-3 * 256 / 8})
    work = str(tmp_path / "run")
    train.train(config, work, progress=False, stop_after_step=20)  # interrupted, then resumed
    train.train(config, work, progress=False)
    rows = read_metrics(work)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    final = [r for r in rows if "eval_average_mAP" in r][-1]
    # the same evaluation of the untrained head (its prior-bias scores) is the reference
    import flax.linen as nn
    import jax
    from internvideo_jax.infra import sharding
    from internvideo_jax.tasks import get_task
    task = get_task(config)
    untrained = nn.meta.unbox(task.init_variables(jax.random.key(0), task.init_batch(1)))
    before = task.evaluate(untrained, sharding.make_mesh(config.mesh.to_dict()), config)
    print(f"mAP@0.3: trained {final['eval_mAP@0.30']:.3f}, untrained {before['mAP@0.30']:.3f}")
    assert final["eval_mAP@0.30"] > max(0.3, 2 * before["mAP@0.30"])
    # the written results, scored by the command, give the logged numbers
    out = tmp_path / "metrics.json"
    subprocess.run([sys.executable, "-m", "internvideo_jax.localization", "score",
                    "--ground-truth", gt, "--predictions",
                    os.path.join(work, "predictions_validation.json"), "--subset", "validation",
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True)
    scored = json.loads(out.read_text())
    # the run's pictures: its curves, and timelines of the first evaluated videos
    from PIL import Image
    assert Image.open(os.path.join(work, "curves.png")).size[0] > 0
    timelines = sorted(os.listdir(os.path.join(work, "pictures")))
    assert timelines and all(t.startswith("timeline_video_") for t in timelines)
    assert scored["average_mAP"] == pytest.approx(final["eval_average_mAP"], abs=1e-12)
    assert scored["mAP"]["0.30"] == pytest.approx(final["eval_mAP@0.30"], abs=1e-12)
