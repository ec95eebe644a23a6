"""Action recognition: what every classifier task shares (VideoMAE, UniFormerV2, CMA).

Batch {'video': (B, T, S, S, 3) uint8, 'label': (B,) int32}. Training: mixup / cutmix with switch
prob and label smoothing (on the device), RandAugment, random erasing, repeated augmentation
(config.augment / config.data); evaluation: the multi-view protocol (internvideo_jax/evaluation/evaluate.py).
A subclass builds `self.model` (logits (B, K) from normalised video; `deterministic` switches
dropout, drop path and BatchNorm) and maps a pretraining checkpoint onto it in `load_pretrained`.
Models with BatchNorm declare `mutable = ('batch_stats',)`: their loss_fn takes and returns the
statistics (internvideo_jax/training/train.py threads them through the step).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipelines import builders, label_map, normalization
from internvideo_jax.evaluation.evaluate import evaluate
from internvideo_jax.tasks.base import Task, standardize, to_unit_range  # noqa: F401
from internvideo_jax.training import mixup


class ClassificationTask(Task):

    def __init__(self, config):
        m, d = config.model, config.data
        if m.num_classes <= 0:
            raise ValueError("model.num_classes must be set (the label map's size).")
        self.config, self.data, self.num_classes = config, d, m.num_classes
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        self.mean, self.std = (np.asarray(v, np.float32) for v in normalization.get(d.normalization))
        self.model = self.build_model(config)

    def build_model(self, config):
        raise NotImplementedError

    # ---- model ------------------------------------------------------------------------------
    def init_batch(self, batch_size: int) -> dict:
        return {"video": np.zeros((batch_size,) + self.video_shape, np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, *self.model_inputs(to_unit_range(batch["video"])))

    def model_inputs(self, video: jax.Array) -> tuple[jax.Array, ...]:
        """Video on [0, 1] (B, T, S, S, 3) float32 -> the model's positional inputs."""
        return (standardize(video, self.mean, self.std, self.model.dtype),)

    def apply(self, variables: dict, video: jax.Array, train: bool,
              rng: jax.Array | None = None) -> tuple[Any, dict]:
        """Video on [0, 1] -> (the model's output, the model state after the call)."""
        rngs = {"dropout": rng} if rng is not None else {}
        inputs = self.model_inputs(video)
        if train and self.mutable:
            out, state = self.model.apply(variables, *inputs, deterministic=False, rngs=rngs,
                                          mutable=list(self.mutable))
            return out, dict(state)
        out = self.model.apply(variables, *inputs, deterministic=not train, rngs=rngs)
        return out, {k: variables[k] for k in self.mutable}

    def logits_of(self, output) -> jax.Array:
        """The model's output -> (B, K) float32 class logits."""
        return output.astype(jnp.float32)

    def loss_of(self, output, targets: jax.Array) -> tuple[jax.Array, dict]:
        """(loss, extra metrics) of the model's output against soft targets (B, K)."""
        return optax.softmax_cross_entropy(self.logits_of(output), targets).mean(), {}

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool, model_state=None):
        a = self.config.augment
        mix_rng, drop_rng = jax.random.split(rng)
        video = to_unit_range(batch["video"])  # mixing commutes with the (affine) normalisation
        if train and (a.mixup_alpha > 0 or a.cutmix_alpha > 0):
            video, targets = mixup.mixup_cutmix(
                mix_rng, video, batch["label"], self.num_classes, mixup_alpha=a.mixup_alpha,
                cutmix_alpha=a.cutmix_alpha, switch_prob=a.switch_prob,
                smoothing=a.label_smoothing)
        else:
            targets = mixup.smooth_one_hot(batch["label"], self.num_classes,
                                           a.label_smoothing if train else 0.0)
        output, model_state = self.apply({"params": params, **(model_state or {})}, video,
                                         train, drop_rng)
        loss, extra = self.loss_of(output, targets)
        accuracy = jnp.mean(jnp.argmax(self.logits_of(output), -1) == batch["label"])
        metrics = {"loss": loss, "accuracy": accuracy, **extra}
        return (loss, (metrics, model_state)) if self.mutable else (loss, metrics)

    def logits_fn(self, variables: dict, video: jax.Array) -> jax.Array:
        """(B, T, S, S, 3) uint8 -> (B, classes) float32 logits, deterministic."""
        return self.logits_of(self.apply(variables, to_unit_range(video), train=False)[0])

    def clip_features(self, variables: dict, video: jax.Array) -> dict:
        """(B, T, S, S, 3) uint8 -> {'features': (B, C) the pooled feature the head reads (the
        model's `pooled` method), 'scores': (B, K) softmax}, float32, deterministic."""
        feature, logits = self.model.apply(variables, *self.model_inputs(to_unit_range(video)),
                                           method="pooled")
        return {"features": feature.astype(jnp.float32),
                "scores": jax.nn.softmax(self.logits_of(logits), axis=-1)}

    # ---- data -------------------------------------------------------------------------------
    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        d, a = self.data, self.config.augment
        clip = builders.ClassifyClip(
            d.num_frames, d.stride, d.crop_size, d.sampler, d.flip,
            (a.randaugment_ops, a.randaugment_magnitude) if a.randaugment_ops else None,
            a.erasing, d.short_video, a.min_crop_area, d.sample_fps)
        return builders.train_stream(d, clip, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step, num_repeats=d.num_repeats)

    @functools.cached_property
    def label_map(self) -> dict:
        """{'names', 'sha256', 'source'} of the training split."""
        names, origin = label_map.class_names(builders.open_data_source(self.data),
                                              self.data.labels, self.num_classes)
        if len(names) != self.num_classes:
            raise ValueError(f"model.num_classes={self.num_classes} but the label map "
                             f"({origin}) has {len(names)} classes.")
        return {"names": names, "sha256": label_map.fingerprint(names), "source": origin}

    # ---- evaluation -------------------------------------------------------------------------
    def eval_views(self, config=None) -> builders.EvalViews:
        """The test views of (config or the task's config).eval."""
        d, e = self.data, (config or self.config).eval
        return builders.EvalViews(d.num_frames, d.stride, d.crop_size, e.num_clips, e.num_crops,
                                  d.sampler, d.sample_fps)

    def protocol(self) -> dict:
        """The evaluation protocol and label map (stored in checkpoints, printed with results)."""
        d, e = self.data, self.config.eval
        mean, std = normalization.get(d.normalization)
        return {"frames": d.num_frames, "stride": d.stride, "sample_fps": d.sample_fps,
                "sampler": d.sampler,
                "clips": e.num_clips, "crops": e.num_crops, "crop_size": d.crop_size,
                "normalization": d.normalization, "mean": list(mean), "std": list(std),
                "label_map": self.label_map}

    def evaluate(self, variables, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """Multi-view top-1/top-5 on config.eval.split (internvideo_jax.evaluation.evaluate)."""
        return evaluate(self, variables, mesh, config, out_dir, stored_protocol)


def copy_matching(target: dict, source: dict, prefix: tuple[str, ...], source_prefix=(),
                  adapt=None) -> tuple[dict, list[str]]:
    """Copy source[source_prefix + p] into target[prefix + p] for every target path under
    `prefix` that the source has. adapt(path, src, target_value) may reshape (e.g. resize a
    position table); a remaining shape mismatch is an error naming the tensor.
    Returns (target, loaded paths). Trees are flat {path tuple: array}."""
    loaded = []
    n = len(prefix)
    for path, value in target.items():
        if path[:n] != prefix or source_prefix + path[n:] not in source:
            continue
        src = np.asarray(source[source_prefix + path[n:]])
        if adapt is not None:
            src = adapt(path, src, value)
        if tuple(src.shape) != tuple(value.shape):
            raise ValueError(f"pretrained {'/'.join(source_prefix + path[n:])} has shape "
                             f"{tuple(src.shape)}, the model's {'/'.join(path)} needs "
                             f"{tuple(value.shape)}.")
        target[path] = jnp.asarray(src, value.dtype)
        loaded.append("/".join(path))
    return target, loaded
