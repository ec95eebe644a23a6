"""The Task base class: every method the trainer, the evaluators and the tools may call, with the
defaults a task that does not need it gets (no `hasattr` probes anywhere).

A task = model + input pipeline + loss + metrics. Subclasses must provide:
  __init__(config)                       validate the config (fails early, naming the fix)
  model                                  the Flax module
  init_batch(batch_size) -> dict         zero arrays with the batch's shapes/dtypes, for init
  init_variables(rng, batch) -> dict     model variables (logically boxed)
  loss_fn(params, batch, rng, train)     -> (scalar loss, dict of scalar metrics)
                                         (tasks with `mutable` collections, e.g. BatchNorm:
                                         loss_fn(..., model_state) -> (loss, (metrics, state)))
  train_dataset(seed, local_batch, process_index, process_count, start_step=0)
                                         -> (grain IterDataset, epoch size); start_step > 0
                                         starts the stream where that many steps ended
and may override the rest (defaults below). `implements(name)` says whether a subclass gives
one of the optional capabilities (evaluate, video_features, clip_features, pooled_features,
pictures)
itself.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def to_unit_range(video_uint8: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 on [0, 1]."""
    return video_uint8.astype(jnp.float32) / 255.0


def standardize(video: jax.Array, mean, std, dtype) -> jax.Array:
    """Video on [0, 1] (..., 3) -> (video - mean) / std per channel, in the model's dtype: the
    one uint8 -> model input step every task takes (mean/std: input_pipelines/normalization)."""
    return ((video - mean) / std).astype(dtype)


def normalized(video_uint8: jax.Array, mean, std, dtype) -> jax.Array:
    """uint8 pixels -> the model's input: standardize(to_unit_range(video))."""
    return standardize(to_unit_range(video_uint8), mean, std, dtype)


class Task:
    mutable: tuple[str, ...] = ()  # model-state collections the step threads (e.g. batch_stats)

    def implements(self, name: str) -> bool:
        """Whether this task defines `name` itself rather than inheriting Task's default."""
        return getattr(type(self), name, None) is not getattr(Task, name, None)

    # ---- training -------------------------------------------------------------------------------
    def trainable_mask(self, params) -> Any:
        """A tree of bools like params (False: frozen, no update and no optimizer state), or None:
        everything trains."""
        return None

    def lr_scales(self, params) -> Any:
        """A tree of floats like params: per-parameter lr multipliers (e.g. 10 on a new head), or
        None: the same lr everywhere."""
        return None

    def initial_params(self, params: dict) -> tuple[dict, str] | None:
        """(params, report) this task starts a fresh run from by its own rule (CMA: two
        checkpoints), or None: config.init_from (load_pretrained) or the initialisation."""
        return None

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        """config.init_from's params mapped onto ours -> (params, loaded paths, paths kept at
        their initial values)."""
        raise ValueError(f"task {type(self).__name__} does not start from config.init_from.")

    def flops_per_example(self) -> float | None:
        """Forward FLOPs of one example (internvideo_jax/infra/flops.py), None when not counted."""
        return None

    def train_flops_per_example(self) -> float | None:
        """Training FLOPs of one example where 3x the forward is wrong (frozen parts), else None."""
        return None

    # ---- what is stored with the weights --------------------------------------------------------
    def protocol(self) -> dict | None:
        """The evaluation protocol and label map, stored in checkpoints; None: none."""
        return None

    def architecture(self) -> dict | None:
        """The model's description (models/architecture.py) for model.size=init_from; None."""
        return None

    # ---- optional capabilities (implements(name) tells whether a task has them) ----------------
    def evaluate(self, variables: dict, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """Metrics on config.eval.split (run at the end of training and by --mode=evaluate)."""
        raise ValueError(f"task {type(self).__name__} has no evaluation.")

    def video_features(self, variables: dict, video) -> Any:
        """Per-video features for --mode=extract_features."""
        raise ValueError(f"task {type(self).__name__} defines no video features to extract.")

    def clip_features(self, variables: dict, video) -> dict:
        """(B, T, S, S, 3) uint8 clips -> {'features': (B, C) float32, and 'scores': (B, K)
        float32 class probabilities where the model classifies}: what --mode=
        extract_clip_features writes per clip (internvideo_jax/localization/features.py)."""
        raise ValueError(f"task {type(self).__name__} defines no clip features to extract.")

    def pictures(self, variables: dict, mesh, config, step: int, out_dir: str) -> dict[str, str]:
        """Pictures of the model at training step `step` (config.pictures), written under out_dir
        by process 0 -> {TensorBoard tag: PNG path} (empty on the other processes). Every process
        calls it (the forward runs on the whole mesh)."""
        raise ValueError(f"task {type(self).__name__} draws no pictures while training.")

    def pooled_features(self, variables: dict, video) -> Any:
        """Pooled encoder features for the linear probe."""
        raise ValueError(f"task {type(self).__name__} defines no pooled features to probe.")
