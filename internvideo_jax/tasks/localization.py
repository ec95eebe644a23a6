"""Temporal action localization: an ActionFormer-style head on clip features of untrimmed videos.

Data: config.data.features, a clip-feature dataset (--mode=extract_clip_features), and
config.data.ground_truth, an ActivityNet-style JSON (THUMOS-14 converts to it: python -m
internvideo_jax.localization convert-thumos). Training videos: data.split; evaluation:
eval.split. Classes: the sorted labels of the whole ground truth (stored with the checkpoint,
with their hash, as the protocol's label map).

Batch {'features': (B, T, C) float32, 'mask': (B, T) bool, 'segments': (B, M, 2) float32 in
feature steps, 'labels': (B, M) int32, 'segment_mask': (B, M) bool} (localization/data.py).
Loss (ActionFormer): every point of the pyramid (assign.feature_points) is assigned a segment
(regression ranges per level, centre sampling); sigmoid focal loss over the valid points' class
targets + loss_weight x DIoU of the positives' distances to start and end, both summed and
divided by an EMA of the number of positives (momentum 0.9 from model.init_loss_norm; model
state 'loss_stats', threaded by the step like BatchNorm statistics).
Evaluation: whole videos (padded to a multiple of data.max_len), per-level top-k, score
threshold, Soft-NMS, at most eval.max_segments per video, optional fusion with video-level class
scores (eval.video_scores); written as ActivityNet results (predictions_<subset>.json) and scored
by the ActivityNet detection protocol (activitynet.py) at eval.tious.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from input_pipelines import builders, label_map
from internvideo_jax.evaluation import pictures
from internvideo_jax.localization import activitynet, assign, data as loc_data, losses
from internvideo_jax.localization import features as clip_features
from internvideo_jax.localization import postprocess
from internvideo_jax.models import actionformer
from internvideo_jax.tasks.base import Task

LOSS_NORM_MOMENTUM = 0.9  # ActionFormer's loss_normalizer_momentum


def regression_ranges(num_levels: int, base: float) -> list[tuple[float, float]]:
    """ActionFormer's ranges in feature steps: (0, b), (b, 2b), ..., (b 2^(L-2), inf); b = 4."""
    edges = [0.0] + [base * 2 ** i for i in range(num_levels - 1)] + [float("inf")]
    return list(zip(edges[:-1], edges[1:]))


def fuse_video_scores(segments: np.ndarray, scores: np.ndarray, class_probs: np.ndarray,
                      top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ActionFormer's fusion with video-level class scores (ActivityNet): every segment (M, 2)
    once per top_k class of the video, scored sqrt(class prob x segment score); -> (segments
    (kM, 2), scores (kM,), labels (kM,)), the best class's copies first."""
    top = np.argsort(class_probs)[::-1][:top_k]  # (k,)
    fused = np.sqrt(class_probs[top][:, None] * scores[None, :]).reshape(-1)  # (k M,)
    return np.tile(segments, (len(top), 1)), fused, np.repeat(top, len(scores))


class LocalizationTask(Task):
    mutable = ("loss_stats",)

    def __init__(self, config):
        m, d = config.model, config.data
        self.config, self.data = config, d
        if not d.features or not d.ground_truth:
            raise ValueError("data.features (a clip-feature dataset: --mode=extract_clip_features "
                             "prints it) and data.ground_truth (an ActivityNet-style JSON) must "
                             "be set.")
        self.ground_truth = activitynet.load_json(d.ground_truth)
        activitynet.check_ground_truth(self.ground_truth, d.ground_truth)
        names = sorted({a["label"] for v in self.ground_truth["database"].values()
                        for a in v["annotations"]})
        self.class_names = ["action"] if m.class_agnostic else names
        self.num_classes = len(self.class_names)
        if not m.class_agnostic and m.num_classes != self.num_classes:
            raise ValueError(f"model.num_classes={m.num_classes} but {d.ground_truth} has "
                             f"{self.num_classes} classes: set --config.model.num_classes="
                             f"{self.num_classes}.")
        self.label_names = names  # what predictions are labelled with
        if m.class_agnostic and not config.eval.video_scores:
            raise ValueError("model.class_agnostic=True needs eval.video_scores ('features': the "
                             "extracting classifier's scores, or a scores file) to label the "
                             "segments.")
        where, sources = clip_features.open_dataset(d.features)
        first = sources[next(iter(sources))][0]
        self.input_dim = int(np.asarray(first["features"]).shape[1])
        self.size = dataclasses.replace(actionformer.get_size(m.size), input_dim=self.input_dim)
        actionformer.check_length(d.max_len, self.size)
        self.model = actionformer.ActionFormer(self.size, self.num_classes, dropout=m.dropout,
                                               path_drop=m.path_drop, prior_prob=m.prior_prob,
                                               dtype=jnp.dtype(m.dtype))
        self.ranges = regression_ranges(len(self.size.strides), m.regression_base)
        self.sample = loc_data.SequenceSample(d.max_len, m.max_segments, d.resize,
                                              d.trunc_thresh)

    # ---- model ------------------------------------------------------------------------------
    def init_batch(self, batch_size: int) -> dict:
        t, m = self.data.max_len, self.config.model.max_segments
        return {"features": np.zeros((batch_size, t, self.input_dim), np.float32),
                "mask": np.ones((batch_size, t), bool),
                "segments": np.zeros((batch_size, m, 2), np.float32),
                "labels": np.zeros((batch_size, m), np.int32),
                "segment_mask": np.zeros((batch_size, m), bool)}

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        variables = dict(self.model.init(rng, batch["features"], batch["mask"]))
        variables["loss_stats"] = {"normalizer": jnp.float32(self.config.model.init_loss_norm)}
        return variables

    def points(self, length: int) -> np.ndarray:
        """(P, 4) points of a sequence of `length` features (assign.feature_points)."""
        strides = self.size.strides
        return assign.feature_points([length // s for s in strides], strides, self.ranges)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool, model_state=None):
        m = self.config.model
        out = self.model.apply({"params": params}, batch["features"], batch["mask"],
                               deterministic=not train, rngs={"dropout": rng})
        logits = jnp.concatenate(out["cls_logits"], axis=1)  # (B, P, K)
        offsets = jnp.concatenate(out["offsets"], axis=1)  # (B, P, 2)
        valid = jnp.concatenate(out["masks"], axis=1)  # (B, P)
        labels = batch["labels"] * (1 - m.class_agnostic)
        points = jnp.asarray(self.points(batch["features"].shape[1]))
        cls_t, reg_t, positive = jax.vmap(
            lambda s, l, v: assign.assign_targets(points, s, l, v, self.num_classes,
                                                  m.center_sample_radius))(
            batch["segments"], labels, batch["segment_mask"])
        positive = positive & valid
        num_pos = positive.sum()
        state = model_state["loss_stats"]
        normalizer = (LOSS_NORM_MOMENTUM * state["normalizer"]
                      + (1 - LOSS_NORM_MOMENTUM) * jnp.maximum(num_pos, 1))
        if m.label_smoothing:
            cls_t = cls_t * (1 - m.label_smoothing) + m.label_smoothing / (self.num_classes + 1)
        focal = losses.sigmoid_focal_loss(logits, cls_t)  # (B, P, K)
        cls_loss = jnp.sum(focal * valid[..., None]) / normalizer
        diou = losses.diou_loss_1d(offsets, reg_t)  # (B, P)
        reg_loss = jnp.sum(jnp.where(positive, diou, 0.0)) / normalizer
        loss = cls_loss + m.loss_weight * reg_loss
        metrics = {"loss": loss, "cls_loss": cls_loss, "reg_loss": reg_loss,
                   "positives": num_pos.astype(jnp.float32)}
        new_state = {"loss_stats": {"normalizer": normalizer if train else state["normalizer"]}}
        return loss, (metrics, new_state)

    # ---- data -------------------------------------------------------------------------------
    def sequences(self, subset: str) -> loc_data.VideoSequences:
        seqs = loc_data.VideoSequences(self.data.features, self.ground_truth, subset,
                                       self.label_names)
        if seqs.missing:
            print(f"warning: {len(seqs.missing)} video(s) of subset {subset!r} have no features "
                  f"and are left out: {seqs.missing[:10]}{' ...' if len(seqs.missing) > 10 else ''}",
                  flush=True)
        return seqs

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        return builders.train_stream(self.data, self.sample, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step,
                                     source=self.sequences(self.data.split))

    @functools.cached_property
    def label_map(self) -> dict:
        return {"names": self.label_names, "sha256": label_map.fingerprint(self.label_names),
                "source": self.data.ground_truth}

    def protocol(self) -> dict:
        d, e = self.data, self.config.eval
        return {"features": d.features, "max_len": d.max_len, "resize": d.resize,
                "split": e.split, "tious": list(activitynet.parse_tious(e.tious)),
                "nms_sigma": e.nms_sigma, "max_segments": e.max_segments,
                "pre_nms_topk": e.pre_nms_topk, "score_threshold": e.score_threshold,
                "video_scores": e.video_scores, "label_map": self.label_map}

    # ---- evaluation -------------------------------------------------------------------------
    def detect(self, variables: dict, example: dict, video_scores: np.ndarray | None) -> list:
        """One video's ActivityNet results: [{'segment': [s, e] seconds, 'label', 'score'}]."""
        e = self.config.eval
        feats, times, _ = self.sample.sequence(example)
        n, max_len = len(feats), self.data.max_len
        length = max_len * max(1, -(-n // max_len))  # a multiple of max_len: few compilations
        batch = self.sample.pad(feats, np.zeros((0, 2)), np.zeros(0, np.int32), length)
        out = self._forward(variables, batch["features"], batch["mask"])
        probs = np.asarray(jax.nn.sigmoid(jnp.concatenate(out["cls_logits"], 1)))[0]  # (P, K)
        offsets = np.asarray(jnp.concatenate(out["offsets"], 1))[0]  # (P, 2)
        valid = np.asarray(jnp.concatenate(out["masks"], 1))[0]  # (P,)
        segs, scores, labels = postprocess.select_candidates(
            probs, offsets, self.points(length), valid, e.pre_nms_topk, e.score_threshold,
            e.min_duration)
        segs, scores, labels = postprocess.soft_nms(
            segs, scores, labels, e.nms_sigma, e.score_threshold, e.max_segments,
            class_agnostic=not e.classwise_nms)
        seconds = np.clip(loc_data.seconds_from_steps(segs, times), 0, example["duration"])
        if video_scores is not None:
            seconds, scores, labels = fuse_video_scores(seconds, scores, video_scores,
                                                        e.video_top_k)
        names = self.label_names
        return [{"segment": [float(s), float(t)], "label": names[int(c)], "score": float(p)}
                for (s, t), c, p in zip(seconds, labels, scores)]

    @functools.cached_property
    def _forward(self):
        return jax.jit(lambda v, f, m: self.model.apply(v, f, m))

    def video_level_scores(self, example: dict) -> np.ndarray | None:
        """(K,) class probabilities of a video for eval.video_scores, in label_names order."""
        source = self.config.eval.video_scores
        if not source:
            return None
        if source == "features":  # the extracting classifier's softmax, averaged over clips
            if "scores" not in example:
                raise ValueError("eval.video_scores='features' but the features hold no scores "
                                 "(extracted with a model without a classifier).")
            probs, names = example["scores"].mean(0), self._encoder_classes
        else:
            probs, names = self._score_file[0].get(example["video_id"]), self._score_file[1]
            if probs is None:
                raise ValueError(f"{source} has no scores for video {example['video_id']}.")
            probs = np.asarray(probs, np.float64)
        index = {n: i for i, n in enumerate(names)}
        return np.asarray([probs[index[n]] if n in index else 0.0 for n in self.label_names])

    @functools.cached_property
    def _score_file(self) -> tuple[dict, list]:
        """eval.video_scores as a file: {'results': {video_id: [p per class]}, 'class': [names]}
        (the format of the ActivityNet classifier scores ActionFormer fuses)."""
        with open(self.config.eval.video_scores) as f:
            z = json.load(f)
        return z["results"], z["class"]

    @functools.cached_property
    def _encoder_classes(self) -> list:
        info = clip_features.read_info(self.data.features)
        if not info.get("classes"):
            raise ValueError(f"{self.data.features} does not record the extracting "
                             f"classifier's class names: give eval.video_scores a scores file.")
        return info["classes"]

    def write_timelines(self, results: dict, out_dir: str, count: int = 4) -> list[str]:
        """Timelines of ground truth and the top predictions of the first `count` evaluated
        videos (by id): out_dir/timeline_<video>.png."""
        os.makedirs(out_dir, exist_ok=True)
        database, paths = self.ground_truth["database"], []
        for vid in sorted(results)[:count]:
            path = os.path.join(out_dir, f"timeline_{clip_features.file_name(vid)}.png")
            pictures.localization_timeline(vid, float(database[vid]["duration"]),
                                           database[vid]["annotations"], results[vid], path)
            paths.append(path)
        return paths

    def evaluate(self, variables: dict, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """mAP on config.eval.split (ActivityNet protocol); writes predictions_<subset>.json
        and localization_<subset>.json into out_dir."""
        e = config.eval
        if stored_protocol is not None:
            label_map.check_same(stored_protocol["label_map"], self.label_map,
                                 self.data.ground_truth)
        seqs = self.sequences(e.split)
        results = {}
        for i in range(len(seqs)):
            example = seqs[i]
            results[example["video_id"]] = self.detect(variables, example,
                                                       self.video_level_scores(example))
        predictions = {"version": "internvideo_jax", "results": results,
                       "external_data": {"used": bool(e.video_scores),
                                         "details": str(e.video_scores)}}
        metrics = activitynet.evaluate_detection(self.ground_truth, predictions, e.split,
                                                 activitynet.parse_tious(e.tious))
        if out_dir and jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"predictions_{e.split}.json"), "w") as f:
                json.dump(predictions, f)
            with open(os.path.join(out_dir, f"localization_{e.split}.json"), "w") as f:
                json.dump(metrics, f, indent=1)
            self.write_timelines(results, os.path.join(out_dir, "pictures"))
        flat = {f"mAP@{t}": v for t, v in metrics["mAP"].items()}
        return {**flat, "average_mAP": metrics["average_mAP"], "videos": len(seqs),
                "videos_without_features": len(seqs.missing),
                "segments": sum(len(r) for r in results.values())}
