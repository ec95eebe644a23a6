"""VideoMAE fine-tuning for action recognition (tasks/classification.py has the shared recipe).

Model: encoder (no final norm) -> mean over tokens -> fc_norm -> dropout -> head (init x 0.001).
init_from = a pretraining workdir or params checkpoint: its encoder is loaded (decoder, encoder
norm and mask token dropped) and the trainer prints what was loaded and what was initialised.
model.pos_embed_grid: the (t, h, w) token grid the checkpoint was trained at when frames or
resolution differ (the sinusoid table is resized: bicubic in space, linear in time).
"""
from __future__ import annotations

import jax.numpy as jnp

from internvideo_jax.infra.flops import videomae_classifier_flops
from internvideo_jax.models import architecture, videomae
from internvideo_jax.tasks.classification import (ClassificationTask, copy_matching,
                                                  to_unit_range)
from internvideo_jax.tree import flatten, unflatten


class VideoMAEFinetuneTask(ClassificationTask):
    def build_model(self, config):
        m = config.model
        self.size = architecture.configured_size(config, "videomae_classifier", videomae.get_size,
                                                 videomae.VideoMAESize)
        videomae.token_grid((1,) + self.video_shape, self.size)  # fails early with the fix
        grid = tuple(m.pos_embed_grid) or None
        if grid is not None and len(grid) != 3:
            raise ValueError(f"model.pos_embed_grid={grid}: give the (t, h, w) token grid of "
                             f"the checkpoint, e.g. (8, 14, 14) for 16 frames at 224.")
        return videomae.VideoMAEClassifier(
            self.size, m.num_classes, drop_path_rate=m.drop_path_rate, dropout=m.dropout,
            dtype=jnp.dtype(m.dtype), pos_grid=grid, remat=m.remat,
            scan=m.scan_layers)

    def architecture(self) -> dict:
        """This model's description (models/architecture.py), stored in the run's config.json."""
        return architecture.describe("videomae_classifier", self.size,
                                     architecture.name_of(self.size, videomae.SIZES),
                                     num_classes=self.num_classes)

    def flops_per_example(self) -> float:
        """Forward FLOPs of one clip (internvideo_jax/infra/flops.py)."""
        return videomae_classifier_flops(self.size, self.video_shape, self.num_classes)

    def pooled_features(self, variables: dict, video):
        """(B, V, T, S, S, 3) uint8 views -> (B, V, D): the mean of the encoder's tokens (what
        fc_norm and the head read; the linear probe's features)."""
        b, v = video.shape[:2]
        x = self.model_inputs(to_unit_range(video.reshape((b * v,) + video.shape[2:])))[0]
        tokens = self.model.apply(variables, x, method="tokens")  # (B*V, N, D)
        return tokens.mean(axis=1).astype(jnp.float32).reshape(b, v, -1)

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        """Copy a pretraining checkpoint's encoder into the classifier.

        Returns (params, loaded paths, paths left at their initial value). Shapes must match;
        a mismatch is an error naming the tensor.
        """
        target, loaded = copy_matching(flatten(params), flatten(pretrained.get("encoder",
                                                                              pretrained)),
                                       ("encoder",))
        kept = sorted(set("/".join(p) for p in target) - set(loaded))
        encoder = [k for k in ("/".join(p) for p in target) if k.startswith("encoder/")]
        missing = [k for k in encoder if k in set(kept)]
        if len(missing) > 0.1 * len(encoder):  # a run of another model, or nothing matched
            raise ValueError(
                f"init_from fills {len(encoder) - len(missing)} of this classifier's "
                f"{len(encoder)} encoder tensors (missing e.g. {missing[:5]}): it is not a "
                f"VideoMAE run or import of this size (model.size={self.config.model.size!r}). "
                f"Point init_from at a VideoMAE pretraining/fine-tuning workdir or an imported "
                f"VideoMAE checkpoint of the same size.")
        return unflatten(target), loaded, kept
