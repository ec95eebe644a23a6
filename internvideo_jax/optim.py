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
import optax

NO_DECAY_NAMES = frozenset({"bias", "q_bias", "v_bias", "scale", "mask_token", "pos_embed",
                            "cls_token", "gamma_1", "gamma_2"})


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay. Accepts boxed (logically partitioned) trees."""
    params = nn.meta.unbox(params)

    def decide(path, leaf) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        return leaf.ndim > 1 and name not in NO_DECAY_NAMES

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
