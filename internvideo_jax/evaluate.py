"""Multi-view classification evaluation: softmax per view, mean over the views of a video.

Views: `eval.num_clips` temporal clips x `eval.num_crops` spatial crops (input_pipelines.builders.
EvalViews). Reports top-1, top-5 and mean per-class accuracy over the split's videos (padding in
the last batch excluded), gathered over processes.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from input_pipelines import builders, label_map
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


def video_ids(config, indices: np.ndarray) -> list[str]:
    """The video_id of each source index of config.eval.split (the index when there is none)."""
    source = builders.open_data_source(eval_data_config(config))
    out = []
    for index in indices:
        vid = source[int(index)].get("video_id", str(index))
        out.append(vid.decode() if isinstance(vid, bytes) else str(vid))
    return out


def eval_label_map(config) -> dict:
    """{'names', 'sha256', 'source'} of config.eval.split's dataset."""
    data = eval_data_config(config)
    names, origin = label_map.class_names(builders.open_data_source(data), data.labels,
                                          config.model.num_classes)
    return {"names": names, "sha256": label_map.fingerprint(names), "source": origin}


def describe_protocol(p: dict) -> str:
    """One line: how the numbers were measured."""
    return (f"protocol: {p['frames']} frames ({p['sampler']}, stride {p['stride']}) x "
            f"{p['clips']} clips x {p['crops']} crops, short side -> {p['crop_size']}, "
            f"{p['crop_size']}px crops, {p['normalization']} mean {p['mean']} std {p['std']}, "
            f"label map {p['label_map']['source']} ({len(p['label_map']['names'])} classes, "
            f"sha256 {p['label_map']['sha256'][:12]})")


def evaluate(task, variables, mesh, config, out_dir: str | None = None,
             stored_protocol: dict | None = None) -> dict:
    """Evaluate `variables` ({'params', ...model state}) on config.eval.split with the task's
    multi-view protocol.

    The split's label map must equal the one the model was trained with (`stored_protocol`, from
    the checkpoint, else the task's training split): a different one is refused. With out_dir:
    writes scores_<split>.npz (video_id, label, view_probs (N, V, K), scores (N, K), class_names,
    protocol as JSON: the input of `python -m internvideo_jax.ensemble`) and confusion_<split>.png.
    """
    protocol = task.protocol()
    current = eval_label_map(config)
    reference = (stored_protocol or protocol)["label_map"]
    label_map.check_same(reference, current, f"{config.data.dataset}:{config.eval.split}")

    def view_probs(variables, video):  # (B, V, T, S, S, 3) -> (B, V, K)
        b, v = video.shape[:2]
        logits = task.logits_fn(variables, video.reshape((b * v,) + video.shape[2:]))
        return jax.nn.softmax(logits, axis=-1).reshape(b, v, -1)

    got = map_over_split(view_probs, variables, mesh, config, task.eval_views())
    scores = video_scores(got["outputs"])
    result = accuracy_metrics(scores, got["label"], task.num_classes)
    result["views"] = int(config.eval.num_clips * config.eval.num_crops)
    print(f"eval {config.eval.split}: top-1 {100 * result['top1']:.2f} top-5 "
          f"{100 * result['top5']:.2f} mean class {100 * result['mean_class_accuracy']:.2f} "
          f"({result['videos']} videos); {describe_protocol(protocol)}", flush=True)
    if out_dir and jax.process_index() == 0:
        from internvideo_jax import plots
        os.makedirs(out_dir, exist_ok=True)
        split = config.eval.split
        np.savez(os.path.join(out_dir, f"scores_{split}.npz"),
                 video_id=np.asarray(video_ids(config, got["index"])), label=got["label"],
                 view_probs=got["outputs"].astype(np.float32), scores=scores.astype(np.float32),
                 class_names=np.asarray(current["names"]), protocol=json.dumps(protocol))
        counts = plots.confusion_matrix(scores.argmax(1), got["label"], task.num_classes)
        plots.write_confusion_png(
            counts, current["names"], os.path.join(out_dir, f"confusion_{split}.png"),
            f"{split}: top-1 {100 * result['top1']:.1f}% of {result['videos']} videos")
    return result
