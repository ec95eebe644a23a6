"""Evaluation and feature extraction from a finished checkpoint, without training.

  python -m internvideo_jax.main --mode=evaluate --config experiments/mm_pretrain.py:tiny \
      --workdir workdirs/demo_mm            # -> workdir/eval_<split>.json, printed
  python -m internvideo_jax.main --mode=extract_features --config ... --workdir W
      # -> W/features/<split>/<video_id>.npy (one per video) and W/features/<split>.npz
      #    (video_id, features (N, E), label), for the task's config.eval.split

Parameters come from the workdir's latest checkpoint; a workdir without checkpoints takes them from
config.init_from (a workdir, a checkpoint step or a params-only checkpoint, e.g. an imported one).
They must match the task's model exactly (missing or unexpected tensors are refused with their
names).
"""
from __future__ import annotations

import json
import os
import re

import flax.linen as nn
import jax
import numpy as np

from internvideo_jax.evaluation.evaluate import map_over_split, skipped_arrays, video_ids
from internvideo_jax.infra import sharding
from internvideo_jax.tasks import get_task
from internvideo_jax.training import checkpointing
from internvideo_jax.tree import flatten


def restore_variables(task, path: str, mesh, ema: bool = False) -> tuple[dict, dict]:
    """The task's variables ({'params', ...model state}) from a checkpoint at `path`, placed with
    the model's shardings, and the run's metadata (config.json, with the protocol when stored).
    ema: the EMA weights when the run kept them."""
    params, meta = checkpointing.load_variables(path, ema)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        boxed = jax.eval_shape(lambda r: task.init_variables(r, task.init_batch(1)),
                               jax.random.key(0))
        shardings = sharding.logical_shardings(boxed, mesh)
    expected = {"/".join(k): v for k, v in flatten(nn.meta.unbox(boxed)).items()}
    got = {"/".join(k): v for k, v in flatten(params).items()}
    missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"The checkpoint at {path} does not fit config.model: missing "
                         f"{missing[:20]}{'...' if len(missing) > 20 else ''}, unexpected "
                         f"{unexpected[:20]}{'...' if len(unexpected) > 20 else ''}.")
    wrong = [f"{k}: {tuple(got[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(got[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"The checkpoint at {path} has tensors of other shapes: {wrong[:20]}.")
    return jax.device_put(params, shardings), meta


def _setup(config, workdir: str):
    mesh = sharding.make_mesh(config.mesh.to_dict())
    task = get_task(config)
    has_run = os.path.isdir(os.path.join(workdir, "checkpoints"))
    source = workdir if has_run or not config.init_from else config.init_from
    ema = float(config.optim.ema_decay) > 0
    variables, meta = restore_variables(task, source, mesh, ema)
    return mesh, task, variables, meta, source


def evaluate(config, workdir: str) -> dict:
    """task.evaluate on config.eval.split; writes workdir/eval_<split>.json (and, for
    classification, scores_<split>.npz and confusion_<split>.png) and returns the metrics.
    A checkpoint that stored its protocol refuses a dataset with another label map."""
    mesh, task, variables, meta, source = _setup(config, workdir)
    if not task.implements("evaluate"):
        raise ValueError(f"task {config.task!r} has no evaluation.")
    stored, protocol = meta.get("protocol"), task.protocol()
    if stored is None and protocol is not None:
        print(f"note: {source} stores no evaluation protocol or label map (an imported "
              f"checkpoint?): the label map cannot be checked.")
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        result = task.evaluate(variables, mesh, config, out_dir=workdir, stored_protocol=stored)
    result = {"checkpoint": source, "split": config.eval.split, **result}
    if protocol is not None:
        result["protocol"] = protocol
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, f"eval_{config.eval.split}.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


def _file_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_") or "video"


def extract_features(config, workdir: str) -> str:
    """Per-video features of config.eval.split (the task's video_features: for mm_pretrain the
    L2-normalised video embedding). Returns the .npz path."""
    mesh, task, variables, _, _ = _setup(config, workdir)
    if not task.implements("video_features"):
        raise ValueError(f"task {config.task!r} defines no video features to extract.")
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        got = map_over_split(task.video_features, variables, mesh, config, task.eval_views())
    ids = video_ids(config, got["index"])
    out_dir = os.path.join(workdir, "features", config.eval.split)
    path = out_dir + ".npz"
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        used: set[str] = set()
        for vid, feature in zip(ids, got["outputs"]):
            name = _file_name(vid)
            while name in used:  # distinct ids that sanitise alike stay distinct files
                name += "_"
            used.add(name)
            np.save(os.path.join(out_dir, name + ".npy"), feature.astype(np.float32))
        np.savez(path, video_id=np.asarray(ids), features=got["outputs"].astype(np.float32),
                 label=got["label"], **skipped_arrays(got["skipped"]))
    return path
