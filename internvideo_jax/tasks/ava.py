"""Spatio-temporal action detection (AVA-style): VideoMAE + an RoIAlign head on person boxes.

Data: keyframes (input_pipelines/ava.py KeyframeSource): a movie source (data.dataset) with the
AVA CSVs (data.boxes: training ground truth; data.eval_boxes: the boxes evaluated on, usually a
person detector's, kept at data.detection_threshold; data.ground_truth: the evaluation's ground
truth; data.labelmap; data.exclusions / data.eval_exclusions), or a dataset that gives keyframes
itself ('demo_ava': its files come from input_pipelines/synthetic_ava.files). Classes: the label
map's, in its order (stored with the checkpoint, with their hash).

Batch {'video': (B, T, S, S, 3) uint8, 'boxes': (B, M, 4) float32 clip pixels, 'box_mask': (B, M),
'labels': (B, M, K) multi-hot, 'scores', 'image_size', 'index'} (ava.KeyframeClip).
Model (models/ava_head.py VideoMAEDetector): the encoder with its final norm, tokens averaged over
time, RoIAlign 7x7 at 1/patch, max pool, dropout, linear; sigmoid binary cross-entropy, averaged
over the classes and the real boxes (the reference sums over boxes: its loss is this x the boxes
on a GPU). init_from: a VideoMAE pretraining or fine-tuning run or import (the encoder loads).
Evaluation: the eval boxes of every keyframe -> class probabilities per box -> AVA detection rows
(detections_<split>.csv: video_id, timestamp, x1, y1, x2, y2 normalised, action_id, score) ->
frame-mAP at IoU 0.5 by the official rules (internvideo_jax/detection/ava_eval.py).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipelines import ava, builders, decode, label_map, normalization
from internvideo_jax.detection import ava_eval
from internvideo_jax.evaluation import pictures
from internvideo_jax.evaluation.evaluate import eval_data_config, map_over_split
from internvideo_jax.models import ava_head, videomae
from internvideo_jax.tasks.base import Task, normalized
from internvideo_jax.tasks.classification import copy_matching
from internvideo_jax.tree import flatten, unflatten


class AVADetectionTask(Task):
    def __init__(self, config):
        m, d = config.model, config.data
        self.config, self.data = config, d
        if not d.labelmap:
            raise ValueError("data.labelmap must name the AVA label map (pbtxt).")
        self.categories = ava.read_label_map(d.labelmap)  # [(id, name)]
        self.class_ids = [c for c, _ in self.categories]
        self.num_classes = len(self.class_ids)
        if m.num_classes != self.num_classes:
            raise ValueError(f"model.num_classes={m.num_classes} but {d.labelmap} has "
                             f"{self.num_classes} classes: set --config.model.num_classes="
                             f"{self.num_classes}.")
        self.size = videomae.get_size(m.size)
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        videomae.token_grid((1,) + self.video_shape, self.size)  # fails early with the fix
        self.mean, self.std = (np.asarray(v, np.float32)
                               for v in normalization.get(d.normalization))
        self.model = ava_head.VideoMAEDetector(
            self.size, self.num_classes, drop_path_rate=m.drop_path_rate, dropout=m.dropout,
            dtype=jnp.dtype(m.dtype), remat=m.remat, scan=m.scan_layers)

    def clip(self, train: bool) -> ava.KeyframeClip:
        d, a = self.data, self.config.augment
        return ava.KeyframeClip(
            d.num_frames, d.stride, d.crop_size, self.config.model.max_boxes, self.num_classes,
            train=train, jitter=tuple(a.box_jitter) or None, flip=a.flip,
            scale_range=tuple(a.scale_range), eval_short_side=d.crop_size,
            eval_max_side=d.crop_size, pad_multiple=self.size.patch)

    # ---- model ------------------------------------------------------------------------------
    def init_batch(self, batch_size: int) -> dict:
        m, k = self.config.model.max_boxes, self.num_classes
        return {"video": np.zeros((batch_size,) + self.video_shape, np.uint8),
                "boxes": np.zeros((batch_size, m, 4), np.float32),
                "box_mask": np.zeros((batch_size, m), bool),
                "labels": np.zeros((batch_size, m, k), np.float32),
                "scores": np.zeros((batch_size, m), np.float32),
                "image_size": np.zeros((batch_size, 2), np.int32),
                "index": np.zeros((batch_size,), np.int32)}

    def normalize(self, video_uint8: jax.Array) -> jax.Array:
        return normalized(video_uint8, self.mean, self.std, self.model.dtype)

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, self.normalize(batch["video"]), batch["boxes"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        logits = self.model.apply({"params": params}, self.normalize(batch["video"]),
                                  batch["boxes"], deterministic=not train,
                                  rngs={"dropout": rng})  # (B, M, K)
        mask = batch["box_mask"].astype(jnp.float32)  # (B, M)
        bce = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean(-1)  # (B, M)
        boxes = jnp.maximum(mask.sum(), 1.0)
        loss = jnp.sum(bce * mask) / boxes
        hit = ((logits > 0) == (batch["labels"] > 0.5)).mean(-1)  # (B, M)
        return loss, {"loss": loss, "box_label_accuracy": jnp.sum(hit * mask) / boxes,
                      "boxes": mask.sum()}

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        """A VideoMAE run's encoder (pretraining: with its final norm; a fine-tuned classifier
        has none, the norm then starts at ones/zeros as in the reference)."""
        target, loaded = copy_matching(flatten(params), flatten(pretrained.get("encoder",
                                                                              pretrained)),
                                       ("encoder",))
        if not any(k.startswith("encoder/") for k in loaded):
            raise ValueError("init_from holds no VideoMAE encoder tensors of this size "
                             f"(model.size={self.config.model.size!r}).")
        kept = sorted(set("/".join(p) for p in target) - set(loaded))
        return unflatten(target), loaded, kept

    # ---- data -------------------------------------------------------------------------------
    def keyframes(self, data, train: bool):
        """The keyframes of `data`'s split: a dataset that gives them (demo_ava), else the
        movies with the CSVs of config.data."""
        source = builders.open_data_source(data)
        if isinstance(source, ava.KeyframeSource):
            return source
        d = self.data
        path = d.boxes if train else d.eval_boxes
        exclusions = d.exclusions if train else d.eval_exclusions
        if not path:
            raise ValueError(f"data.{'boxes' if train else 'eval_boxes'} must name the AVA CSV "
                             f"of the {'training' if train else 'evaluated'} boxes.")
        detections = not train
        return ava.KeyframeSource(
            source, ava.read_boxes(path, detections=detections), self.class_ids,
            exclusions=ava.read_exclusions(exclusions) if exclusions else (),
            time_offset=d.time_offset, min_score=d.detection_threshold if detections else None)

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        return builders.train_stream(self.data, self.clip(True), seed=seed,
                                     local_batch=local_batch, process_index=process_index,
                                     process_count=process_count, start_step=start_step,
                                     source=self.keyframes(self.data, True))

    @functools.cached_property
    def label_map(self) -> dict:
        names = [name for _, name in self.categories]
        return {"names": names, "sha256": label_map.fingerprint(names),
                "source": self.data.labelmap}

    def protocol(self) -> dict:
        d = self.data
        return {"frames": d.num_frames, "rate": d.stride, "crop_size": d.crop_size,
                "normalization": d.normalization, "detection_threshold": d.detection_threshold,
                "max_boxes": self.config.model.max_boxes, "label_map": self.label_map}

    # ---- evaluation -------------------------------------------------------------------------
    def ground_truth(self) -> dict:
        """data.ground_truth read by the evaluator's rules (ava_eval.read_csv)."""
        if not self.data.ground_truth:
            raise ValueError("data.ground_truth must name the evaluation's AVA ground-truth CSV.")
        return ava_eval.read_csv(self.data.ground_truth, set(self.class_ids))

    def score_rows(self, rows: list[tuple], truth: dict | None = None) -> dict:
        """Frame-mAP ({'mAP', 'per_class'}) of detection rows (detection_rows) against `truth`
        (default: ground_truth()), data.eval_exclusions dropped from both (ava_eval's rules)."""
        d = self.data
        truth = self.ground_truth() if truth is None else truth
        grouped: dict[tuple, tuple[list, list, list]] = {}
        for vid, ts, box, cls, score in rows:
            entry = grouped.setdefault((vid, ts), ([], [], []))
            entry[0].append(box)
            entry[1].append(cls)
            entry[2].append(score)
        detections = {k: (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(c),
                          np.asarray(s, np.float64)) for k, (b, c, s) in grouped.items()}
        excluded = ava_eval.read_exclusions(d.eval_exclusions) if d.eval_exclusions else None
        categories = [{"id": c, "name": n} for c, n in self.categories]
        return ava_eval.evaluate_frames(truth, detections, categories, excluded)

    def write_keyframes(self, source, indices: np.ndarray, probs: np.ndarray, truth: dict,
                        out_dir: str, count: int = 4) -> list[str]:
        """The first `count` evaluated keyframes with their ground-truth boxes (green, every
        action) and the evaluated boxes (red, the best class and its score):
        out_dir/keyframe_<video>_<timestamp>.png."""
        os.makedirs(out_dir, exist_ok=True)
        names = dict(self.categories)
        paths = []
        for index, p in list(zip(indices, probs))[:count]:
            video_id, timestamp = source.keyframes[int(index)]
            example = source[int(index)]
            with decode.Video(example["video"]) as video:
                frame = np.argmin(np.abs(video.times - float(example["keyframe_time"])))
                rgb = decode.to_rgb(video.frames([int(frame)])[0])  # (H, W, 3)
            key = ava_eval.keyframe_key(video_id, str(timestamp))
            t_boxes, t_labels, _ = truth.get(key, (np.zeros((0, 4)), np.zeros(0), None))
            boxes = source.boxes(int(index))
            best = np.argmax(p[:len(boxes)], -1) if len(boxes) else np.zeros(0, int)
            path = os.path.join(out_dir, f"keyframe_{video_id}_{timestamp}.png")
            pictures.keyframe_boxes(rgb, np.asarray(t_boxes), [names[int(c)] for c in t_labels],
                                    boxes, [(names[self.class_ids[k]], float(p[b, k]))
                                            for b, k in enumerate(best)], path)
            paths.append(path)
        return paths

    def box_probs(self, variables: dict, video: jax.Array, boxes: jax.Array) -> jax.Array:
        """(B, 1, T, S, S, 3) uint8, (B, M, 4) clip pixels -> (B, M, K) probabilities."""
        logits = self.model.apply(variables, self.normalize(video[:, 0]), boxes)
        return jax.nn.sigmoid(logits.astype(jnp.float32))

    def evaluate(self, variables, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """Frame-mAP at IoU 0.5 on config.eval.split's keyframes and boxes."""
        if stored_protocol is not None:
            label_map.check_same(stored_protocol["label_map"], self.label_map,
                                 self.data.labelmap)
        data = eval_data_config(config)
        source = self.keyframes(data, False)
        views = EvalClip(self.clip(False))
        got = map_over_split(self.box_probs, variables, mesh, config, views,
                             inputs=("video", "boxes"), source=source)
        rows = detection_rows(source, got["index"], got["outputs"], self.class_ids)
        truth = self.ground_truth()
        metrics = self.score_rows(rows, truth)
        if out_dir and jax.process_index() == 0:
            self.write_keyframes(source, got["index"], got["outputs"], truth,
                                 os.path.join(out_dir, "pictures"))
        if out_dir and jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"detections_{config.eval.split}.csv"), "w") as f:
                f.writelines(f"{vid},{ts},{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f},{c},"
                             f"{s:.6f}\n" for vid, ts, b, c, s in rows)
        per_class = {f"AP_{name}": ap for name, ap in metrics["per_class"].items()
                     if ap == ap}  # NaN: no ground truth of the class
        return {"frame_mAP": metrics["mAP"], "keyframes": len(got["index"]), **per_class}


class EvalClip:
    """eval_dataset's views for keyframes: the clip (train=False), video with its view axis, and
    'label' (eval_dataset's field; unused here)."""

    def __init__(self, clip: ava.KeyframeClip):
        self.clip = clip

    def __call__(self, example: dict, index: int) -> dict:
        out = self.clip(example, index)
        return {"video": out["video"], "boxes": out["boxes"][0], "label": np.int32(0),
                "index": np.int32(index)}

    def blank(self, index: int) -> dict:
        short, _, (w, h) = self.clip.eval_sizes
        return {"video": np.zeros((1, self.clip.num_frames, h, w, 3), np.uint8),
                "boxes": np.zeros((self.clip.max_boxes, 4), np.float32), "label": np.int32(0),
                "index": np.int32(index)}


def detection_rows(source, indices: np.ndarray, probs: np.ndarray,
                   class_ids: list[int]) -> list[tuple]:
    """(video_id, timestamp, normalised box, action id, score) for every box of every evaluated
    keyframe and every class, the boxes as the source holds them (not the clip's pixels)."""
    rows = []
    for index, p in zip(indices, probs):
        video_id, timestamp = source.keyframes[int(index)]
        for b, box in enumerate(source.boxes(int(index)).astype(np.float64)):
            rows.extend((video_id, timestamp, box, cid, float(p[b, k]))
                        for k, cid in enumerate(class_ids))
    return rows


def whole_clip_baseline(task: AVADetectionTask, classifier_task, classifier_variables: dict,
                        mesh, config) -> dict:
    """The detection baseline: a clip classifier's softmax (e.g. the demo's fine-tuned VideoMAE;
    its classes must be the label map's, in its order) given to every box of every evaluated
    keyframe (the whole frame as the detection task's evaluation sees it) -> frame-mAP
    ({'mAP', 'per_class'}). It knows which actions happen in a clip, not who does them."""
    source = task.keyframes(eval_data_config(config), False)
    clip = task.clip(False)

    def probs(variables, video):  # (B, 1, T, S, S, 3) -> (B, K)
        return jax.nn.softmax(classifier_task.logits_fn(variables, video[:, 0]), axis=-1)

    got = map_over_split(probs, classifier_variables, mesh, config, EvalClip(clip),
                         source=source)
    per_box = np.repeat(got["outputs"][:, None, :], clip.max_boxes, axis=1)  # (N, M, K)
    return task.score_rows(detection_rows(source, got["index"], per_box, task.class_ids))
