"""Multi-view classification evaluation: softmax per view, mean over the views of a video.

Views: `eval.num_clips` temporal clips x `eval.num_crops` spatial crops (input_pipelines.builders.
EvalViews). Reports top-1, top-5 and mean per-class accuracy over the split's videos (padding in
the last batch excluded), gathered over processes.

A classifier trained on a union label space (Kinetics-710, input_pipelines/label_union.py) is
evaluated on one of its sources with eval.label_subset='k710/maps.json:k400': the model's label
map must be the union's, the split's labels are the source's indices (its label map the
source's), and each view's logits keep the source's columns (logits[:, to_union], the
reference's head conversion) before the softmax: the numbers of the 400-class model.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from input_pipelines import builders, label_map, label_union, sources
from internvideo_jax.evaluation import plots
from internvideo_jax.infra import sharding


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


def eval_data_config(config, split: str | None = None):
    """config.data for one ordered pass over `split` (default config.eval.split).

    A file list (`list:train.txt`, ...) is one split: evaluating on another split reads
    data.eval_dataset; without one, or when it is the training list itself, evaluation is
    refused unless data.allow_eval_on_train says the training files are meant. The same split
    as training (the linear probe's training features) reads the training data as it is. With
    eval.label_subset, another split's class names are the source's (its labels file).
    """
    data = config.data.copy_and_resolve_references()
    split = config.eval.split if split is None else split
    subset = label_subset(config)
    with data.unlocked():
        evaluating = split != data.split
        if subset is not None and evaluating:  # the source's split: its names, not the union's
            data.labels = subset.labels_path
        if evaluating and data.eval_dataset:
            if data.eval_dataset == data.dataset and not data.allow_eval_on_train:
                raise ValueError(
                    f"data.eval_dataset is the training data ({data.dataset}): evaluation would "
                    f"score the training videos. Give another list, or set "
                    f"--config.data.allow_eval_on_train=True if that is what you want.")
            data.dataset = data.eval_dataset
        elif evaluating and sources.is_file_list(data.dataset) and not data.allow_eval_on_train:
            raise ValueError(
                f"data.dataset={data.dataset} is one file list, with no {split!r} split: "
                f"evaluating on it would score the training videos. Give the evaluation list "
                f"with --config.data.eval_dataset=<format>:<file> (e.g. list:/data/val.txt), or "
                f"--config.data.allow_eval_on_train=True to evaluate on the training files.")
        data.split = split
        data.num_workers = 0  # one ordered pass; decode threads still run in parallel
    return data


def _reason_bytes(errors: np.ndarray, width: int = 400) -> np.ndarray:
    """(B,) strings -> (B, width) uint8, so they can be gathered over processes."""
    out = np.zeros((len(errors), width), np.uint8)
    for i, text in enumerate(errors):
        raw = str(text).encode("utf-8")[:width]
        out[i, :len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _reason_text(row: np.ndarray) -> str:
    return bytes(row).rstrip(b"\0").decode("utf-8", errors="replace")


def map_over_split(fn, params, mesh, config, views: builders.EvalViews,
                   inputs: tuple[str, ...] = ("video",), source=None) -> dict:
    """Run fn(params, video (B, V, T, S, S, 3) uint8) -> (B, ...) over every video of
    config.eval.split, gathered over processes. inputs: the fields of `views`' output passed to
    fn, in order (e.g. ('video', 'question')); source: a random-access source to read instead
    of the split's videos (e.g. one example per question).

    A video that cannot be loaded is skipped (the training policy: logged, counted, past
    data.max_bad_videos the pass stops with the list) and reported, never silently dropped.
    Returns {'outputs': (N, ...), 'label': (N,), 'index': (N,) source index} for the N videos of
    the split that loaded (the last batch's padding removed), as NumPy, and 'skipped': a list of
    (video, reason) for those that did not.
    """
    batch = config.eval.batch_size
    dp = sharding.data_parallel_size(mesh)
    if batch % dp or batch % jax.process_count():
        raise ValueError(f"eval.batch_size={batch} must be a multiple of the {dp} data-parallel "
                         f"devices.")
    ds, _ = builders.eval_dataset(eval_data_config(config), views,
                                  batch_size=batch // jax.process_count(),
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count(), source=source)
    jitted = jax.jit(fn)
    outputs, labels, index, valid, failed, reasons = [], [], [], [], [], []
    for host in ds:
        device = sharding.put_batch({k: host[k] for k in inputs}, mesh)
        out = multihost_utils.process_allgather(jitted(params, *(device[k] for k in inputs)),
                                                tiled=True)
        outputs.append(np.asarray(out))
        host["failed"] = np.asarray([bool(e) and v for e, v in zip(host["error"],
                                                                    host["valid"])])
        host["reason"] = _reason_bytes(host["error"])
        for name, acc in (("label", labels), ("index", index), ("valid", valid),
                          ("failed", failed), ("reason", reasons)):
            acc.append(multihost_utils.process_allgather(host[name], tiled=True))
        bad = int(sum(f.sum() for f in failed))
        if bad > config.data.max_bad_videos:
            rows = np.concatenate(reasons)[np.concatenate(failed).astype(bool)]
            raise RuntimeError(f"{bad} videos of {config.eval.split} failed to load, more than "
                               f"data.max_bad_videos={config.data.max_bad_videos}: "
                               f"{[_reason_text(r) for r in rows]}")
    valid, failed = np.concatenate(valid).astype(bool), np.concatenate(failed).astype(bool)
    keep = valid & ~failed
    skipped = [tuple(_reason_text(r).split("\t", 1)) for r in np.concatenate(reasons)[failed]]
    if skipped:
        print(f"warning: {len(skipped)} video(s) of {config.eval.split} could not be loaded and "
              f"are left out of the metrics: "
              + "; ".join(f"{v} ({why})" for v, why in skipped[:10])
              + (" ..." if len(skipped) > 10 else ""), flush=True)
    return {"outputs": np.concatenate(outputs)[keep], "label": np.concatenate(labels)[keep],
            "index": np.concatenate(index)[keep], "skipped": skipped}


def video_ids(config, indices: np.ndarray) -> list[str]:
    """The video_id of each source index of config.eval.split (the index when there is none)."""
    source = builders.open_data_source(eval_data_config(config))
    out = []
    for index in indices:
        vid = source[int(index)].get("video_id", str(index))
        out.append(vid.decode() if isinstance(vid, bytes) else str(vid))
    return out


def label_subset(config) -> label_union.Subset | None:
    """config.eval.label_subset ('MAPS.json:SOURCE'; '' or absent: none; a config without an
    eval block, e.g. pretraining drawing its pictures: none)."""
    if "eval" not in config:
        return None
    return label_union.parse_subset(config.eval.get("label_subset", "") or "")


def eval_label_map(config, subset: label_union.Subset | None = None) -> dict:
    """{'names', 'sha256', 'source'} of config.eval.split's dataset. With a label subset, the
    split is read as the subset's source: its label map is the source's (a dataset naming its
    classes, e.g. TFDS, must name the source's), data.labels (the union's) is not its own."""
    data = eval_data_config(config)
    if subset is not None:
        wanted = subset.union.label_map(subset.source, f"label_subset:{subset.spec}")
        names, origin = label_map.class_names(builders.open_data_source(data), "", 0)
        if names:
            label_map.check_same(wanted, {"names": names, "sha256": label_map.fingerprint(names),
                                          "source": origin},
                                 f"{config.data.dataset}:{config.eval.split} (as label_subset "
                                 f"{subset.source})")
        return wanted
    names, origin = label_map.class_names(builders.open_data_source(data), data.labels,
                                          config.model.num_classes)
    return {"names": names, "sha256": label_map.fingerprint(names), "source": origin}


def skipped_report(skipped: list[tuple[str, str]]) -> dict:
    """The result keys that say which videos of the split were left out, and why."""
    return {"skipped_videos": len(skipped),
            "skipped": [{"video": v, "reason": why} for v, why in skipped]}


def skipped_arrays(skipped: list[tuple[str, str]]) -> dict:
    """The same for an .npz file: skipped_video (S,) and skipped_reason (S,) strings."""
    return {"skipped_video": np.asarray([v for v, _ in skipped], dtype=str),
            "skipped_reason": np.asarray([why for _, why in skipped], dtype=str)}


def describe_protocol(p: dict) -> str:
    """One line: how the numbers were measured."""
    spacing = (f"at {p['sample_fps']:g} fps" if p.get("sample_fps")
               else f"stride {p['stride']}")
    return (f"protocol: {p['frames']} frames ({p['sampler']}, {spacing}) x "
            f"{p['clips']} clips x {p['crops']} crops, short side -> {p['crop_size']}, "
            f"{p['crop_size']}px crops, {p['normalization']} mean {p['mean']} std {p['std']}, "
            f"label map {p['label_map']['source']} ({len(p['label_map']['names'])} classes, "
            f"sha256 {p['label_map']['sha256'][:12]})")


def evaluate(task, variables, mesh, config, out_dir: str | None = None,
             stored_protocol: dict | None = None) -> dict:
    """Evaluate `variables` ({'params', ...model state}) on config.eval.split with the task's
    multi-view protocol.

    The split's label map must equal the one the model was trained with (`stored_protocol`, from
    the checkpoint, else the task's training split): a different one is refused; with
    eval.label_subset (module docstring) the model's must be the union's and the split's the
    source's, and the scores are the source's columns. With out_dir:
    writes scores_<split>.npz (video_id, label, view_probs (N, V, K), scores (N, K), class_names,
    protocol as JSON: the input of `python -m internvideo_jax.ensemble`) and confusion_<split>.png.
    """
    protocol = task.protocol()
    reference = (stored_protocol or protocol)["label_map"]
    subset = label_subset(config)
    columns = None
    if subset is not None:
        if config.eval.split == config.data.split:
            raise ValueError(f"eval.label_subset={subset.spec} scores a {subset.source} split, "
                             f"but eval.split is the training split ({config.data.split}, "
                             f"union labels); set eval.split (and data.eval_dataset).")
        label_map.check_same(reference, subset.union.label_map(origin=subset.path),
                             f"eval.label_subset's union ({subset.path})")
        current = eval_label_map(config, subset)
        columns = subset.columns
        protocol = {**protocol, "label_map": current,
                    "label_subset": {"maps": subset.path, "source": subset.source,
                                     "union": subset.union.label_map(origin=subset.path)}}
    else:
        current = eval_label_map(config)
        label_map.check_same(reference, current, f"{config.data.dataset}:{config.eval.split}")
    num_classes = len(current["names"]) if columns is not None else task.num_classes

    def view_probs(variables, video):  # (B, V, T, S, S, 3) -> (B, V, K)
        b, v = video.shape[:2]
        logits = task.logits_fn(variables, video.reshape((b * v,) + video.shape[2:]))
        if columns is not None:  # the source's columns of the union's logits
            logits = logits[:, columns]
        return jax.nn.softmax(logits, axis=-1).reshape(b, v, -1)

    got = map_over_split(view_probs, variables, mesh, config, task.eval_views())
    if columns is not None and len(got["label"]) and not (
            (got["label"] >= 0) & (got["label"] < num_classes)).all():
        bad = sorted(set(int(x) for x in got["label"] if not 0 <= x < num_classes))[:10]
        raise ValueError(f"eval.label_subset={subset.spec}: the split's labels must be "
                         f"{subset.source} indices (0..{num_classes - 1}); got {bad}")
    scores = video_scores(got["outputs"])
    result = accuracy_metrics(scores, got["label"], num_classes)
    if subset is not None:
        result["label_subset"] = subset.source
    result["views"] = int(config.eval.num_clips * config.eval.num_crops)
    result.update(skipped_report(got["skipped"]))
    unread = (f", {len(got['skipped'])} unreadable left out" if got["skipped"] else "")
    print(f"eval {config.eval.split}: top-1 {100 * result['top1']:.2f} top-5 "
          f"{100 * result['top5']:.2f} mean class {100 * result['mean_class_accuracy']:.2f} "
          f"({result['videos']} videos{unread}); {describe_protocol(protocol)}", flush=True)
    if out_dir and jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        split = config.eval.split
        np.savez(os.path.join(out_dir, f"scores_{split}.npz"),
                 video_id=np.asarray(video_ids(config, got["index"])), label=got["label"],
                 view_probs=got["outputs"].astype(np.float32), scores=scores.astype(np.float32),
                 class_names=np.asarray(current["names"]), protocol=json.dumps(protocol),
                 **skipped_arrays(got["skipped"]))
        counts = plots.confusion_matrix(scores.argmax(1), got["label"], num_classes)
        plots.write_confusion_png(
            counts, current["names"], os.path.join(out_dir, f"confusion_{split}.png"),
            f"{split}: top-1 {100 * result['top1']:.1f}% of {result['videos']} videos")
    return result
