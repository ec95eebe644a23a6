"""Multi-view classification evaluation: softmax per view, mean over the views of a video.

Views: `eval.num_clips` temporal clips x `eval.num_crops` spatial crops (input_pipelines.builders.
EvalViews). Reports top-1, top-5 and mean per-class accuracy over the split's videos (padding in
the last batch excluded), gathered over processes.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from input_pipelines import builders
from internvideo_jax import sharding


def video_scores(view_probs: np.ndarray) -> np.ndarray:
    """(B, V, K) per-view softmax -> (B, K) per-video scores (mean over views)."""
    return view_probs.mean(axis=1)


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1 / top-5 / mean per-class accuracy (classes absent from `labels` are skipped)."""
    top = np.argsort(-scores, axis=1)
    top1 = top[:, 0] == labels
    top5 = (top[:, :5] == labels[:, None]).any(axis=1)
    per_class = [top1[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    return {"top1": float(top1.mean()), "top5": float(top5.mean()),
            "mean_class_accuracy": float(np.mean(per_class)), "videos": int(len(labels))}


def eval_data_config(config):
    """config.data for one ordered pass over config.eval.split."""
    data = config.data.copy_and_resolve_references()
    with data.unlocked():
        data.split = config.eval.split
        data.num_workers = 0  # one ordered pass; decode threads still run in parallel
    return data


def map_over_split(fn, params, mesh, config, views: builders.EvalViews) -> dict:
    """Run fn(params, video (B, V, T, S, S, 3) uint8) -> (B, ...) over every video of
    config.eval.split, gathered over processes.

    Returns {'outputs': (N, ...), 'label': (N,), 'index': (N,) source index} for the N videos of
    the split (the last batch's padding removed), as NumPy.
    """
    batch = config.eval.batch_size
    dp = sharding.data_parallel_size(mesh)
    if batch % dp or batch % jax.process_count():
        raise ValueError(f"eval.batch_size={batch} must be a multiple of the {dp} data-parallel "
                         f"devices.")
    ds, _ = builders.eval_dataset(eval_data_config(config), views,
                                  batch_size=batch // jax.process_count(),
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
    jitted = jax.jit(fn)
    outputs, labels, index, valid = [], [], [], []
    for host in ds:
        device = sharding.put_batch({"video": host["video"]}, mesh)
        out = multihost_utils.process_allgather(jitted(params, device["video"]), tiled=True)
        outputs.append(np.asarray(out))
        for name, acc in (("label", labels), ("index", index), ("valid", valid)):
            acc.append(multihost_utils.process_allgather(host[name], tiled=True))
    keep = np.concatenate(valid).astype(bool)
    return {"outputs": np.concatenate(outputs)[keep], "label": np.concatenate(labels)[keep],
            "index": np.concatenate(index)[keep]}


def evaluate(task, params, mesh, config) -> dict:
    """Evaluate `params` on config.eval.split with the task's multi-view protocol."""

    def view_probs(params, video):  # (B, V, T, S, S, 3) -> (B, V, K)
        b, v = video.shape[:2]
        logits = task.logits_fn(params, video.reshape((b * v,) + video.shape[2:]))
        return jax.nn.softmax(logits, axis=-1).reshape(b, v, -1)

    got = map_over_split(view_probs, params, mesh, config, task.eval_views())
    result = accuracy_metrics(video_scores(got["outputs"]), got["label"], task.num_classes)
    result["views"] = int(config.eval.num_clips * config.eval.num_crops)
    return result
