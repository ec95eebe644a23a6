r"""Score-level ensemble of evaluated models (the reference's baseline for CMA).

  python -m internvideo_jax.ensemble workdirs/demo/finetune/scores_validation.npz \
      workdirs/demo/uniformerv2/scores_validation.npz [--weights 1,1] [--out ensemble.json]

Each input is a scores file written by evaluation (internvideo_jax/evaluation/evaluate.py): per video the
mean over its views of the softmax scores. The ensemble's score of a video is the weighted mean of
the models' scores (equal weights: the reference's averaging); top-1/top-5/mean class accuracy are
printed and written. The files must cover the same videos (matched by video_id, in any order) with
the same labels and the same label map, or the command refuses, naming the difference.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from internvideo_jax.evaluation.evaluate import accuracy_metrics


def load_scores(path: str) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in ("video_id", "label", "scores", "class_names")} | {
            "protocol": json.loads(str(f["protocol"])), "path": path}


def ensemble(runs: list[dict], weights: list[float] | None = None) -> tuple[np.ndarray, dict]:
    """Weighted mean of the runs' per-video scores, aligned on the first run's video order.
    Returns (scores (N, K), {'label', 'video_id'})."""
    if len(runs) < 2:
        raise ValueError("give at least two scores files to ensemble.")
    weights = np.ones(len(runs)) if weights is None else np.asarray(weights, float)
    if len(weights) != len(runs) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"--weights {list(weights)}: one non-negative weight per file, not all 0.")
    first = runs[0]
    ids = [str(v) for v in first["video_id"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{first['path']}: video ids are not unique; cannot align the files.")
    total = np.zeros(first["scores"].shape, np.float64)
    for run, w in zip(runs, weights):
        if list(run["class_names"]) != list(first["class_names"]):
            raise ValueError(f"{run['path']} has another label map than {first['path']} "
                             f"({len(run['class_names'])} vs {len(first['class_names'])} "
                             f"classes, first names {list(run['class_names'][:3])} vs "
                             f"{list(first['class_names'][:3])}).")
        position = {str(v): i for i, v in enumerate(run["video_id"])}
        missing = [v for v in ids if v not in position]
        extra = sorted(set(position) - set(ids))
        if missing or extra:
            raise ValueError(f"{run['path']} and {first['path']} cover different videos: "
                             f"missing {missing[:5]}, extra {extra[:5]}.")
        order = np.asarray([position[v] for v in ids])
        if (run["label"][order] != first["label"]).any():
            raise ValueError(f"{run['path']} and {first['path']} disagree on labels.")
        total += w * run["scores"][order]
    return total / weights.sum(), {"label": first["label"], "video_id": ids}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", nargs="+", help="scores_<split>.npz files of evaluated models")
    parser.add_argument("--weights", default="", help="comma-separated, one per file (equal)")
    parser.add_argument("--out", default="", help="write the result as JSON here")
    a = parser.parse_args(argv)
    runs = [load_scores(p) for p in a.scores]
    weights = [float(w) for w in a.weights.split(",")] if a.weights else None
    scores, info = ensemble(runs, weights)
    k = scores.shape[1]
    result = {"files": a.scores, "weights": weights or [1.0] * len(runs),
              "ensemble": accuracy_metrics(scores, info["label"], k),
              "models": {r["path"]: accuracy_metrics(r["scores"], r["label"], k) for r in runs}}
    for path, m in result["models"].items():
        print(f"{path}: top-1 {100 * m['top1']:.2f}")
    e = result["ensemble"]
    print(f"ensemble of {len(runs)}: top-1 {100 * e['top1']:.2f} top-5 {100 * e['top5']:.2f} "
          f"mean class {100 * e['mean_class_accuracy']:.2f} ({e['videos']} videos)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
