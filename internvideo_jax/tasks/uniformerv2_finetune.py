"""UniFormerV2 fine-tuning for action recognition (tasks/classification.py has the shared recipe).

Model: UniFormerV2Classifier (backbone -> fusion of the query token and the frames' CLS ->
proj_norm -> dropout -> proj_head). With model.local (SSv2-style local UniBlocks) the BatchNorm
statistics are model state: batch statistics in training, running averages in evaluation.

init_from: an imported official UniFormerV2 (`convert import --model uniformerv2_classifier`;
backbone and, when the classes agree, the head) or this project's multimodal pretraining
(visual/encoder -> backbone; head initialised). A different resolution resizes
positional_embedding bicubically (models/pos_embed.py); a 2-D conv1 (temporal kernel 1) is
inflated to model.temporal_kernel at the centre tap, as the reference inflates CLIP. Its BatchNorm
statistics (local UniBlocks) come with it (train.carry_model_state).

model.size: a named size (tiny, B/16, L/14, L/14@336), or init_from: the architecture stored with
config.init_from (the model.json `convert import` writes, or a run's config.json), e.g. the
Something-Something checkpoints' 8 (B/16) or 16 (L/14) global UniBlocks, which no named size has;
then temporal_kernel, temporal_stride, local and frozen come from there too, not from the config.
model.frozen: the frozen-backbone variant (no balance; the CLIP backbone is not trained).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from internvideo_jax.infra.flops import uniformerv2_classifier_flops
from internvideo_jax.models import architecture, pos_embed, uniformerv2
from internvideo_jax.tasks.classification import ClassificationTask, copy_matching
from internvideo_jax.tree import flatten, unflatten

# The structural switches besides the size (config keys, or model.json with size=init_from).
ENCODER_SHAPE = ("temporal_kernel", "temporal_stride", "local", "frozen")
# What the frozen-backbone variant does not train (the reference's FROZEN: requires_grad False).
FROZEN_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "resblocks")


class UniFormerV2FinetuneTask(ClassificationTask):
    def build_model(self, config):
        m = config.model
        if m.size == "init_from":  # the architecture stored with the checkpoint (model.json)
            described = architecture.load(config.init_from, "uniformerv2_classifier")
            self.size = architecture.size_of(described, uniformerv2.UniFormerV2Size)
            shape = {k: described[k] for k in ENCODER_SHAPE}
        else:
            self.size = uniformerv2.get_size(m.size)
            shape = {k: m[k] for k in ENCODER_SHAPE}
        if config.data.crop_size != self.size.image_size:
            raise ValueError(f"model.size={m.size!r} takes {self.size.image_size}px frames: set "
                             f"data.crop_size={self.size.image_size}.")
        if config.optim.layer_decay != 1.0:
            raise ValueError("optim.layer_decay must be 1.0 for UniFormerV2 (the reference "
                             "fine-tunes it without layer-wise decay).")
        self.mutable = ("batch_stats",) if shape["local"] else ()
        self.encoder_shape = shape
        return uniformerv2.UniFormerV2Classifier(
            self.size, m.num_classes, shape["temporal_kernel"], shape["temporal_stride"],
            shape["local"], m.backbone_drop_path_rate, m.drop_path_rate, m.mlp_dropout,
            m.dropout, jnp.dtype(m.dtype), m.remat, m.scan_layers,
            shape["frozen"])

    def architecture(self) -> dict:
        """This model's description (models/architecture.py), stored in the run's config.json."""
        return architecture.describe("uniformerv2_classifier", self.size,
                                     architecture.name_of(self.size, uniformerv2.SIZES),
                                     num_classes=self.num_classes, **self.encoder_shape)

    def trainable_mask(self, params):
        """None (all trainable), except with model.frozen (the frozen-backbone variant): the CLIP
        backbone (conv1, class/positional embeddings, ln_pre, the resblocks) stays as loaded, the
        global UniBlocks (temporal_cls_token, dpe, dec) and the head train, as the reference's
        FROZEN recipe."""
        if not self.encoder_shape["frozen"]:
            return None
        return unflatten({p: not (p[0] == "backbone" and p[1].startswith(FROZEN_PARTS))
                          for p in flatten(params)})

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        return load_uniformerv2(params, pretrained)

    def flops_per_example(self) -> float:
        """Forward FLOPs of one clip (internvideo_jax/infra/flops.py)."""
        shape = {k: v for k, v in self.encoder_shape.items() if k != "frozen"}
        return uniformerv2_classifier_flops(self.size, self.video_shape[0], self.num_classes,
                                            **shape)


def _adapt(path, src: np.ndarray, value) -> np.ndarray:
    name = path[-1]
    if name == "positional_embedding" and src.shape != value.shape:
        side = int(round((value.shape[0] - 1) ** 0.5))
        return pos_embed.resize_cls_table(src, (side, side))
    if name == "conv1" and src.shape[0] == 1 and value.shape[0] > 1:
        return uniformerv2.inflate_center(src[0], value.shape[0])
    return src


def load_uniformerv2(params: dict, pretrained: dict) -> tuple[dict, list, list]:
    """A UniFormerV2Classifier's params from a classifier checkpoint (backbone, and the head when
    its classes agree) or a multimodal one (visual/encoder -> backbone). Returns (params, loaded
    paths, paths left at their initial value)."""
    source = flatten(pretrained)
    target = flatten(params)
    if any(p[:2] == ("visual", "encoder") for p in source):  # multimodal pretraining
        target, loaded = copy_matching(target, source, ("backbone",), ("visual", "encoder"),
                                       _adapt)
    else:
        heads = ("proj_norm", "proj_head")
        same_classes = source.get(("proj_head", "bias"), np.zeros(0)).shape == \
            target[("proj_head", "bias")].shape
        keep_head = {k: v for k, v in source.items() if k[0] not in heads or same_classes}
        target, loaded = copy_matching(target, keep_head, (), (), _adapt)
    if not loaded:
        raise ValueError("init_from holds no UniFormerV2 backbone tensors (expected "
                         "'backbone/...' or a multimodal 'visual/encoder/...' tree).")
    kept = sorted(set("/".join(p) for p in target) - set(loaded))
    return unflatten(target), loaded, kept
