"""VideoMAE fine-tuning for action recognition: classifier on labelled clips, multi-view evaluation.

Recipe knobs (config.model / config.data / config.optim): drop path, head dropout, layer-wise lr
decay (optim.layer_decay), mixup / cutmix with switch prob and label smoothing (on the device),
RandAugment, random erasing, repeated augmentation; init_from = a pretraining workdir or params
checkpoint whose encoder is loaded (decoder and encoder norm dropped, with a report).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipelines import builders, normalization
from internvideo_jax import mixup
from internvideo_jax.models import videomae


class VideoMAEFinetuneTask:
    def __init__(self, config):
        m, d = config.model, config.data
        if m.num_classes <= 0:
            raise ValueError("model.num_classes must be set (the label map's size).")
        self.size = videomae.get_size(m.size)
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        videomae.token_grid((1,) + self.video_shape, self.size)  # fails early with the fix
        self.mean, self.std = (np.asarray(v, np.float32) for v in normalization.get(d.normalization))
        self.config = config
        self.data = d
        self.num_classes = m.num_classes
        self.model = videomae.VideoMAEClassifier(
            self.size, m.num_classes, drop_path_rate=m.drop_path_rate, dropout=m.dropout,
            dtype=jnp.dtype(m.dtype))

    def init_batch(self, batch_size: int) -> dict:
        return {"video": np.zeros((batch_size,) + self.video_shape, np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, self.normalize(batch["video"]))

    def normalize(self, video_uint8: jax.Array) -> jax.Array:
        x = (video_uint8.astype(jnp.float32) / 255.0 - self.mean) / self.std
        return x.astype(self.model.dtype)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        a = self.config.augment
        mix_rng, drop_rng = jax.random.split(rng)
        video = self.normalize(batch["video"])
        if train and (a.mixup_alpha > 0 or a.cutmix_alpha > 0):
            video, targets = mixup.mixup_cutmix(
                mix_rng, video, batch["label"], self.num_classes, mixup_alpha=a.mixup_alpha,
                cutmix_alpha=a.cutmix_alpha, switch_prob=a.switch_prob,
                smoothing=a.label_smoothing)
        else:
            targets = mixup.smooth_one_hot(batch["label"], self.num_classes,
                                           a.label_smoothing if train else 0.0)
        logits = self.model.apply({"params": params}, video, deterministic=not train,
                                  rngs={"dropout": drop_rng}).astype(jnp.float32)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"loss": loss, "accuracy": accuracy}

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        d, a = self.data, self.config.augment
        clip = builders.ClassifyClip(
            d.num_frames, d.stride, d.crop_size, d.sampler, d.flip,
            (a.randaugment_ops, a.randaugment_magnitude) if a.randaugment_ops else None,
            a.erasing, d.short_video, a.min_crop_area)
        return builders.train_stream(d, clip, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step, num_repeats=d.num_repeats)

    def eval_views(self) -> builders.EvalViews:
        d, e = self.data, self.config.eval
        return builders.EvalViews(d.num_frames, d.stride, d.crop_size, e.num_clips, e.num_crops,
                                  d.sampler)

    def evaluate(self, params, mesh, config) -> dict:
        """Multi-view top-1/top-5 on config.eval.split (internvideo_jax.evaluate)."""
        from internvideo_jax.evaluate import evaluate
        return evaluate(self, params, mesh, config)

    def logits_fn(self, params, video: jax.Array) -> jax.Array:
        """(B, T, S, S, 3) uint8 -> (B, classes) float32 logits, deterministic."""
        return self.model.apply({"params": params}, self.normalize(video)).astype(jnp.float32)

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        """Copy a pretraining checkpoint's encoder into the classifier.

        Returns (params, loaded paths, paths left at their initial value). Shapes must match;
        a mismatch is an error naming the tensor.
        """
        from internvideo_jax.convert.common import flatten, unflatten
        source = flatten(pretrained.get("encoder", pretrained))
        target = flatten(params)
        loaded, kept = [], []
        for path, value in target.items():
            if path[0] == "encoder" and path[1:] in source:
                src = source[path[1:]]
                if tuple(src.shape) != tuple(value.shape):
                    raise ValueError(f"pretrained {'/'.join(path)} has shape {tuple(src.shape)}, "
                                     f"the model needs {tuple(value.shape)}: frames or "
                                     f"resolution differ (position tables are not parameters, "
                                     f"so this is a size mismatch).")
                target[path] = jnp.asarray(src, value.dtype)
                loaded.append("/".join(path))
            else:
                kept.append("/".join(path))
        return unflatten(target), loaded, kept
