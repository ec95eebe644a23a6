"""Evaluation and feature extraction from a finished checkpoint, without training.

  python -m internvideo_jax.main --mode=evaluate --config experiments/mm_pretrain.py:tiny \
      --workdir workdirs/demo_mm            # -> workdir/eval_<split>.json, printed
  python -m internvideo_jax.main --mode=extract_features --config ... --workdir W
      # -> W/features/<split>/<video_id>.npy (one per video) and W/features/<split>.npz
      #    (video_id, features (N, E), label), for the task's config.eval.split
  python -m internvideo_jax.main --mode=extract_clip_features --config ... \
      --config.init_from=ENCODER --workdir W
      # -> sliding-window clip features of untrimmed videos, for temporal localization
      #    (internvideo_jax/localization/features.py)

Parameters come from the workdir's latest checkpoint; a workdir without checkpoints takes them from
config.init_from (a workdir, a checkpoint step or a params-only checkpoint, e.g. an imported one).
They must match the task's model exactly (missing or unexpected tensors are refused with their
names).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from input_pipelines import builders, robust
from internvideo_jax.evaluation.evaluate import map_over_split, skipped_arrays, video_ids
from internvideo_jax.infra import sharding
from internvideo_jax.localization import features
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


def _splits(config) -> list[str]:
    names = [s.strip() for s in str(config.features.splits).split(",") if s.strip()]
    return names or [config.data.split]


def _check_info(workdir: str, info: dict) -> None:
    """Write workdir/extract_info.json, or refuse a rerun whose checkpoint or windows differ from
    those the part files there were extracted with."""
    path = os.path.join(workdir, features.INFO_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in info.items() if old.get(k) != v]
        if changed:
            raise ValueError(f"{workdir} holds features extracted with other settings "
                             f"({'; '.join(changed)}): use another --workdir, or delete "
                             f"{workdir}/parts to extract again.")
    elif jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(info, f, indent=1)


def extract_clip_features(config, workdir: str) -> str:
    """Sliding-window clip features of every video of config.features.splits through the encoder
    of config.init_from (internvideo_jax/localization/features.py has the layout and the rules).
    Resumable: videos whose part file exists are skipped. Returns the packed dataset's
    directory."""
    if not config.init_from:
        raise ValueError("--config.init_from must name the encoder to extract features with (a "
                         "fine-tuning workdir, a checkpoint step or an imported checkpoint).")
    task = get_task(config)
    if not task.implements("clip_features"):
        raise ValueError(f"task {config.task!r} defines no clip features; use a classifier "
                         f"(videomae_finetune, uniformerv2_finetune) or mm_pretrain.")
    f = config.features
    windows = features.ClipWindows(f.clip_frames, f.frame_step, f.clip_stride, f.size)
    # Each process extracts its own videos on its own devices: no step waits for another host.
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices=jax.local_devices())
    variables, meta = restore_variables(task, config.init_from, mesh,
                                        float(config.optim.ema_decay) > 0)
    splits = _splits(config)
    # the classifier's class names (its stored label map), naming the columns of 'scores'
    classes = (meta.get("protocol") or {}).get("label_map", {}).get("names")
    info = {"checkpoint": os.path.abspath(config.init_from), "task": config.task,
            "dataset": config.data.dataset, "splits": splits,
            "windows": dataclasses.asdict(windows), "architecture": task.architecture(),
            "classes": classes}
    _check_info(workdir, info)
    extractor = features.Extractor(task, variables, mesh, windows, f.batch_size)
    rank, count = jax.process_index(), jax.process_count()
    bad: list[tuple[str, str, str]] = []
    all_parts: dict[str, list[str]] = {}
    for split in splits:
        data = config.data.copy_and_resolve_references()
        with data.unlocked():
            data.split = split
        source = builders.open_data_source(data)
        all_parts[split] = [features.part_path(workdir, split, i) for i in range(len(source))]
        todo = [i for i in range(rank, len(source), count)
                if not os.path.exists(all_parts[split][i])]
        os.makedirs(os.path.join(workdir, "parts", split), exist_ok=True)
        npy_dir = os.path.join(workdir, "npy", split) if f.npy else None
        bar = tqdm.tqdm(total=len(todo), desc=f"clip features {split}", unit="video",
                        disable=rank != 0, dynamic_ncols=True)

        def items():
            for i in todo:
                try:
                    example = source[i]
                except robust.LOAD_ERRORS as e:
                    on_bad({"video_id": robust.source_name(source, i)}, robust.reason(e))
                    continue
                yield example, all_parts[split][i]

        def on_done(p):
            features.save_part(p, npy_dir)
            bar.update()

        def on_bad(example, why):
            bad.append((split, str(example.get("video_id", "?")), why))
            bar.update()
            print(f"warning: skipped {bad[-1][1]} ({why})", flush=True)
            if len(bad) > config.data.max_bad_videos:
                raise RuntimeError(f"{len(bad)} videos could not be read, more than "
                                   f"data.max_bad_videos={config.data.max_bad_videos}: "
                                   f"{[b[1] for b in bad]}")

        extractor.run(items(), on_done, on_bad)
        bar.close()
    name = features.BAD_FILE if count == 1 else f"{features.BAD_FILE}.{rank}"
    with open(os.path.join(workdir, name), "w", encoding="utf-8") as out:
        out.writelines(f"{s}\t{v}\t{why}\n" for s, v, why in bad)
    if count > 1:
        multihost_utils.sync_global_devices("clip features extracted")
    done = {s: [p for p in parts if os.path.exists(p)] for s, parts in all_parts.items()}
    missing = sum(len(all_parts[s]) - len(done[s]) for s in all_parts)
    print(f"clip features: {sum(map(len, done.values()))} videos, {missing} skipped as "
          f"unreadable" + (f" (listed in {workdir}/{features.BAD_FILE}*)" if missing else ""))
    out_dir = features.dataset_dir(workdir, f.name)
    if rank == 0:
        out_dir = features.pack(workdir, f.name, done, info)
    if count > 1:
        multihost_utils.sync_global_devices("clip features packed")
    return out_dir
