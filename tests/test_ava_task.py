"""The AVA detection task end to end on the small embedded AVA-style dataset: a short run's
evaluation writes AVA detection rows, one per (box, class) of every evaluated keyframe, that the
`score` command scores to the logged frame-mAP; the rows are the source's boxes (normalised, as
read) times the classes."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, apply_overrides


def _config(data_dir):
    from experiments.ava import get_config
    from input_pipelines import synthetic_ava
    files = synthetic_ava.files("small", data_dir)
    return apply_overrides(get_config("tiny"), {
        "data.dataset": "demo_ava/small", "data.data_dir": data_dir,
        "data.labelmap": files["label_map"], "data.ground_truth": files["validation"],
        "data.eval_exclusions": files["validation_exclusions"], "batch_size": 8,
        "eval.batch_size": 8, "total_steps": 3, "log_every": 1, "checkpoint_every": 3}), files


def test_run_writes_detections_that_score_as_logged(tmp_path):
    from internvideo_jax.training import train
    from internvideo_jax.training.metrics_writer import read_metrics
    data_dir = str(tmp_path / "data")
    config, files = _config(data_dir)
    work = str(tmp_path / "ava")
    train.train(config, work, progress=False)
    final = [r for r in read_metrics(work) if "eval_frame_mAP" in r][-1]
    path = os.path.join(work, "detections_validation.csv")
    rows = list(csv.reader(open(path)))
    # every kept detection box (score >= 0.8) x the 8 classes
    detected = [r for r in csv.reader(open(files["validation_detections"]))
                if float(r[7]) >= 0.8]
    assert len(rows) == 8 * len(detected)
    assert {int(r[6]) for r in rows} == set(range(1, 9))
    assert all(0.0 <= float(r[7]) <= 1.0 for r in rows)
    out = subprocess.run([sys.executable, "-m", "internvideo_jax.detection", "score",
                          "--ground-truth", files["validation"], "--detections", path,
                          "--labelmap", files["label_map"], "--exclusions",
                          files["validation_exclusions"], "--out", str(tmp_path / "m.json")],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json
    scored = json.load(open(tmp_path / "m.json"))
    from PIL import Image
    frames = sorted(os.listdir(os.path.join(work, "pictures")))
    assert frames and all(f.startswith("keyframe_") for f in frames)
    # the 112 px frame upscaled 4x (evaluation/pictures.keyframe_boxes)
    assert Image.open(os.path.join(work, "pictures", frames[0])).size == (448, 448)
    # the CSV rounds boxes to 3 decimals and scores to 6: equal mAP up to that rounding
    assert scored["mAP"] == pytest.approx(final["eval_frame_mAP"], abs=2e-3)


def test_detection_rows_are_the_source_boxes_times_the_classes(tmp_path):
    from internvideo_jax.tasks import get_task
    from internvideo_jax.tasks.ava import EvalClip, detection_rows
    data_dir = str(tmp_path / "data")
    config, _ = _config(data_dir)
    task = get_task(config)
    source = task.keyframes(config.data, False)
    clip = task.clip(False)
    probs = np.random.default_rng(0).random((2, clip.max_boxes, task.num_classes))
    rows = detection_rows(source, np.array([0, 1]), probs, task.class_ids)
    expected = [(source.keyframes[i][0], source.keyframes[i][1], tuple(box), cid,
                 probs[i, b, k])
                for i in (0, 1) for b, box in enumerate(source.boxes(i).astype(np.float64))
                for k, cid in enumerate(task.class_ids)]
    assert [(v, t, tuple(b), c, s) for v, t, b, c, s in rows] == expected
    view = EvalClip(clip)(source[0], 0)  # the whole frame, resized to the model's input
    assert view["video"].shape[2:4] == (config.data.crop_size, config.data.crop_size)
