"""Optimizers and schedules: AdamW with the reference's weight-decay exclusions, warmup + cosine.

The reference (VideoMAE `get_parameter_groups`) puts a parameter in the no-decay group when it is
1-D, a bias, or named in the model's skip list (pos_embed, cls_token, mask_token). Our layouts are
not always the reference's (q_bias/v_bias are (heads, head_dim) here, 1-D there), so the rule is
stated by name as well as by rank: see `NO_DECAY_NAMES`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from internvideo_jax.models import naming
from internvideo_jax.models.naming import is_stacked_path

NO_DECAY_NAMES = frozenset({
    "bias", "q_bias", "v_bias", "scale", "mask_token", "pos_embed", "cls_token", "gamma_1",
    "gamma_2",
    # CLIP / UniFormerV2 (in_proj_bias is (3, heads, head_dim) here, 1-D in PyTorch)
    "in_proj_bias", "positional_embedding", "class_embedding", "temporal_cls_token"})


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay. Accepts boxed (logically partitioned) trees."""
    params = nn.meta.unbox(params)

    def decide(path, leaf) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        stacked = is_stacked_path(tuple(getattr(k, "key", str(k)) for k in path))
        return leaf.ndim - stacked > 1 and name not in NO_DECAY_NAMES  # a layer's own rank

    return jax.tree_util.tree_map_with_path(decide, params)


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The reference's linear scaling rule: lr = base_lr * global_batch / 256."""
    return base_lr * global_batch / 256


def warmup_cosine(peak_lr: float, min_lr: float, warmup_steps: int,
                  total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to peak over `warmup_steps`, then cosine from peak to `min_lr`."""
    warmup_steps = min(warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=min_lr)


def adamw(schedule: optax.Schedule, b1: float, b2: float, eps: float, weight_decay: float,
          grad_clip: float | None = None) -> optax.GradientTransformation:
    """AdamW (decoupled decay, multiplied by the lr as torch.optim.AdamW) with optional clipping."""
    chain = []
    if grad_clip:
        chain.append(optax.clip_by_global_norm(grad_clip))
    chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                             mask=decay_mask))
    return optax.chain(*chain)


# Layer-wise lr decay counts the layers of the `blocks` stack (models/naming.py) on a path that
# contains this module name: VideoMAE's encoder/transformer/blocks_i (or, scanned, blocks/block).
ENCODER = "encoder"
_EMBEDDINGS = ("patch_embed", "pos_embed", "cls_token", "mask_token")


def vit_layer_id(path: tuple[str, ...], num_layers: int) -> int:
    """The reference's layer assignment for layer-wise lr decay (VideoMAE get_num_layer_for_vit):
    patch embed (and position/cls/mask tokens) -> 0, block k (`blocks_k`, naming.BLOCKS) -> k + 1,
    everything else (final norms, heads) -> num_layers + 1. (Scanned layers: block k of the
    stack, the same rule.)"""
    for name in path:
        if name in _EMBEDDINGS:
            return 0
        parsed = naming.parse_layer(name)
        if parsed is not None and parsed[0] == naming.BLOCKS:
            return parsed[1] + 1
    return num_layers + 1


def _encoder_depth(names: list[tuple[str, ...]], leaves: list[Any]) -> int:
    """L of the layer-decay rule: the encoder's `blocks` layers, per-layer or scanned (0: none)."""
    per_layer = {n for p in names if ENCODER in p for n in p
                 if naming.is_layer_name(n, naming.BLOCKS)}
    stacked = [leaf.shape[0] for p, leaf in zip(names, leaves)
               if ENCODER in p and naming.stacked_stack(p) == naming.BLOCKS]
    return len(per_layer) or (stacked[0] if stacked else 0)


def layer_decay_scales(params: Any, decay: float) -> Any:
    """Per-parameter lr multipliers decay^(L + 1 - layer_id), L = number of encoder blocks;
    for scanned layers an array (depth, 1, ...) that broadcasts over each layer's slice.

    The encoder blocks are the `blocks` stack (models/naming.py) on a path containing 'encoder'
    (VideoMAE). With decay != 1 a tree without them (UniFormerV2, CLIP, ...) is refused, as is
    any tree whose rule would give a multiplier > 1 (decay outside (0, 1], a deeper stack of
    blocks elsewhere than in the encoder): the rule is the reference's for ViTs only."""
    params = nn.meta.unbox(params)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = [tuple(getattr(k, "key", str(k)) for k in path) for path, _ in flat]
    leaves = [leaf for _, leaf in flat]
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1] (1.0: no layer-wise decay), got {decay}.")
    num_layers = _encoder_depth(names, leaves)
    if decay != 1.0 and not num_layers:
        top = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"layer_decay={decay}: found no encoder layers in this parameter tree (top level: "
            f"{top}). Layer-wise lr decay looks for per-layer modules "
            f"{naming.layer_name(naming.BLOCKS, 0)}, {naming.layer_name(naming.BLOCKS, 1)}, ... "
            f"or a scanned '{naming.BLOCKS}/{naming.SCAN_BLOCK}' stack on a path containing "
            f"'{ENCODER}' (VideoMAE's encoder/transformer/blocks_i); without them every "
            f"multiplier would be wrong. layer_decay must be 1.0 for this model "
            f"(set optim.layer_decay=1.0).")
    scales = []
    for p, leaf in zip(names, leaves):
        if naming.stacked_stack(p) == naming.BLOCKS:  # block k of the stack has id k + 1
            ids = np.arange(leaf.shape[0]) + 1
            scale = (decay ** (num_layers + 1 - ids)).astype(np.float32)
            scales.append(scale.reshape((-1,) + (1,) * (leaf.ndim - 1)))
        else:
            scales.append(decay ** (num_layers + 1 - vit_layer_id(p, num_layers)))
    over = ["/".join(p) for p, scale in zip(names, scales) if np.max(scale) > 1.0]
    if over:
        raise ValueError(
            f"layer_decay={decay} with {num_layers} encoder layers gives multipliers > 1 to "
            f"{len(over)} parameters, e.g. {over[:3]}: their layer ids exceed the encoder's "
            f"depth ({naming.BLOCKS} layers outside the encoder deeper than it, or encoder "
            f"layers not numbered 0..{num_layers - 1}). layer_decay must be 1.0 for this model.")
    return jax.tree_util.tree_unflatten(jax.tree.structure(params), scales)


def scale_updates(scales: Any) -> optax.GradientTransformation:
    """Multiply the final updates (lr and weight decay included, as the reference's per-group lr
    does) by a tree of constants."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(init, update)
