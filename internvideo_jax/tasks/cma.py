"""Cross-Model Attention fine-tuning (models/cma.py): two frozen encoders, gated cross-attention.

Initialisation (before step 0 of a fresh run): model.videomae_from = a VideoMAE fine-tuning workdir
(encoder, fc_norm and head, all required) and model.uniformer_from = a UniFormerV2 fine-tuning
workdir (backbone and head) or a multimodal pretraining one (backbone; head initialised); both are
reported. Only `trainable_mask` parameters are trained (optax.multi_transform: the frozen ones get
no update and no optimizer state). Loss: cross entropy of the combined prediction plus
model.head_loss_weight x the mean of the two heads' own cross entropies.
Each encoder sees the same clip, normalised its own way (data.normalization for VideoMAE,
model.uniformer_normalization for UniFormerV2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipelines import normalization
from internvideo_jax.infra.flops import cma_flops
from internvideo_jax.models import cma, uniformerv2, videomae
from internvideo_jax.tasks.base import Task, standardize
from internvideo_jax.tasks.classification import ClassificationTask
from internvideo_jax.tasks.uniformerv2_finetune import load_uniformerv2
from internvideo_jax.training import checkpointing
from internvideo_jax.tree import flatten, unflatten

# Trainable parameters, by path prefix: the CMA blocks (u_from_m_i, m_from_u_i), the score
# weights, both heads and the UniFormerV2 query token. Everything else is frozen.
TRAINABLE_BLOCKS = ("u_from_m_", "m_from_u_")
TRAINABLE_PREFIXES = (("combine",), ("videomae", "fc_norm"), ("videomae", "head"),
                      ("uniformerv2", "proj_norm"), ("uniformerv2", "proj_head"),
                      ("uniformerv2", "backbone", "temporal_cls_token"))


def is_trainable(path: tuple[str, ...]) -> bool:
    return path[0].startswith(TRAINABLE_BLOCKS) or any(
        path[:len(p)] == p for p in TRAINABLE_PREFIXES)


class CMATask(ClassificationTask):
    # Fused scores of two models, no single pooled feature: no clip features (Task's default).
    clip_features = Task.clip_features

    def build_model(self, config):
        m, d = config.model, config.data
        vsize, usize = videomae.get_size(m.videomae_size), uniformerv2.get_size(m.uniformer_size)
        videomae.token_grid((1,) + self.video_shape, vsize)
        if d.crop_size != usize.image_size:
            raise ValueError(f"model.uniformer_size={m.uniformer_size!r} takes "
                             f"{usize.image_size}px frames: set data.crop_size to it.")
        if config.optim.layer_decay != 1.0:
            raise ValueError("optim.layer_decay must be 1.0 for CMA (only heads and new blocks "
                             "train).")
        if m.scan_layers:
            raise ValueError("model.scan_layers must be False for CMA: its encoders are built "
                             "per layer, as the checkpoints it loads.")
        u_mean, u_std = normalization.get(m.uniformer_normalization)
        self.u_mean, self.u_std = np.asarray(u_mean, np.float32), np.asarray(u_std, np.float32)
        grid = tuple(m.pos_embed_grid) or None
        return cma.CrossModelAttention(
            vsize, usize, m.num_classes, m.temporal_kernel, m.temporal_stride, m.local,
            tuple(m.directions), m.depth, m.heads, m.dropout, grid, jnp.dtype(m.dtype))

    def model_inputs(self, video):
        dtype = self.model.dtype
        return (standardize(video, self.mean, self.std, dtype),
                standardize(video, self.u_mean, self.u_std, dtype))

    def logits_of(self, output) -> jax.Array:
        return output["logits"]

    def loss_of(self, output, targets):
        combined = optax.softmax_cross_entropy(output["logits"], targets).mean()
        heads = [optax.softmax_cross_entropy(output[k], targets).mean()
                 for k in ("videomae", "uniformer")]
        w = self.config.model.head_loss_weight
        return combined + w * 0.5 * (heads[0] + heads[1]), {
            "combined_loss": combined, "videomae_loss": heads[0], "uniformer_loss": heads[1]}

    def _flops(self) -> tuple[float, float]:
        m = self.config.model
        return cma_flops(videomae.get_size(m.videomae_size), uniformerv2.get_size(m.uniformer_size),
                         self.video_shape, m.num_classes, tuple(m.directions), m.depth,
                         m.temporal_kernel, m.temporal_stride, m.local)

    def flops_per_example(self) -> float:
        """Forward FLOPs of one clip (internvideo_jax/infra/flops.py)."""
        return self._flops()[0]

    def train_flops_per_example(self) -> float:
        """Training FLOPs of one clip: the frozen encoders run forward only."""
        return self._flops()[1]

    def trainable_mask(self, params):
        return unflatten({p: is_trainable(p) for p in flatten(params)})

    def initial_params(self, params: dict) -> tuple[dict, str]:
        """Both encoders (and heads) from model.videomae_from / model.uniformer_from."""
        m = self.config.model
        if not m.videomae_from or not m.uniformer_from:
            raise ValueError("CMA needs model.videomae_from (a VideoMAE fine-tuning workdir) and "
                             "model.uniformer_from (a UniFormerV2 fine-tuning or multimodal "
                             "workdir): the encoders it coordinates.")
        params = dict(params)
        got, _ = checkpointing.load_params(m.videomae_from, scanned=False)
        want = jax.tree.map(lambda x: (x.shape, x.dtype), params["videomae"])
        have = jax.tree.map(lambda x: (x.shape, np.dtype(x.dtype)), got)
        if jax.tree.structure(want) != jax.tree.structure(have) or want != have:
            raise ValueError(f"{m.videomae_from} is not a VideoMAE classifier of "
                             f"model.videomae_size={m.videomae_size!r} with {m.num_classes} "
                             f"classes: {jax.tree.map(lambda x: x[0], have)}")
        params["videomae"] = jax.tree.map(jnp.asarray, got)
        got, _ = checkpointing.load_params(m.uniformer_from, scanned=False)
        params["uniformerv2"], loaded, kept = load_uniformerv2(params["uniformerv2"], got)
        return params, (f"VideoMAE (all {len(jax.tree.leaves(got))} tensors) from "
                        f"{m.videomae_from}; UniFormerV2 {len(loaded)} tensors from "
                        f"{m.uniformer_from}, initialised: {kept}")
