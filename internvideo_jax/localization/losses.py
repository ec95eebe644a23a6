"""Losses of the ActionFormer-style localization head, elementwise and in float32.

Classification: the sigmoid focal loss of RetinaNet (as ActionFormer's sigmoid_focal_loss):
  ce * (1 - p_t)^gamma * alpha_t, p_t = p t + (1 - p)(1 - t),
  alpha_t = alpha t + (1 - alpha)(1 - t).
Regression: the 1-D Distance-IoU loss on (left, right) distances from one point to the segment
ends (as ActionFormer's ctr_diou_loss_1d): 1 - IoU + (centre distance / enclosing length)^2.
Reductions and the loss normaliser belong to the caller.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid_focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = 0.25,
                       gamma: float = 2.0) -> jax.Array:
    """Sigmoid focal loss per element.

    Computed in log space: ce = -(t log p + (1 - t) log(1 - p)) from log-sigmoids, and
    (1 - p_t)^gamma = exp(gamma * log(p (1 - t) + (1 - p) t)), so neither the value nor the
    gradient overflows or turns NaN for saturated logits (including gamma = 0, where this is BCE).

    Args:
      logits: (...) raw scores.
      targets: (...) same shape, in [0, 1] (soft targets, e.g. label smoothing, are allowed).
      alpha: weight of the positive term; alpha < 0 disables the alpha_t weighting.
      gamma: focusing exponent, >= 0.
    Returns:
      (...) float32 loss, same shape as the inputs.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {logits.shape} and targets {targets.shape} differ in shape")
    x = logits.astype(jnp.float32)
    t = targets.astype(jnp.float32)
    log_p = jax.nn.log_sigmoid(x)  # log p
    log_1mp = jax.nn.log_sigmoid(-x)  # log (1 - p)
    ce = -(t * log_p + (1.0 - t) * log_1mp)
    # log(1 - p_t) = log(p (1 - t) + (1 - p) t); log(0) = -inf for hard targets is harmless here
    log_1m_pt = jnp.logaddexp(log_p + jnp.log1p(-t), log_1mp + jnp.log(t))
    loss = ce * jnp.exp(gamma * log_1m_pt)
    if alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return loss


def diou_loss_1d(pred: jax.Array, target: jax.Array, eps: float = 1e-8) -> jax.Array:
    """1-D Distance-IoU loss between two segments around the same point.

    A segment is (left, right) >= 0: it spans [t - left, t + right] for its point t, so both
    segments contain t and their intersection is min(left) + min(right). The union and the
    enclosing length are clamped below by eps (1e-8, as ActionFormer) before dividing.
    Non-negativity is the caller's contract (not checked: this runs under jit).

    Args:
      pred: (..., 2) predicted distances (left, right), any unit.
      target: (..., 2) target distances in the same unit.
      eps: lower clamp of the IoU and centre-term denominators.
    Returns:
      (...) float32: 1 - IoU + ((c_pred - c_target) / enclosing length)^2; 0 for identical
      segments, above 1 for segments that only touch at t.
    """
    if pred.shape != target.shape or pred.shape[-1:] != (2,):
        raise ValueError(f"pred {pred.shape} and target {target.shape} must share a (..., 2) shape")
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    lp, rp = pred[..., 0], pred[..., 1]  # (...)
    lg, rg = target[..., 0], target[..., 1]  # (...)
    intersection = jnp.minimum(lp, lg) + jnp.minimum(rp, rg)  # (...)
    union = (lp + rp) + (lg + rg) - intersection  # (...)
    iou = intersection / jnp.maximum(union, eps)  # (...)
    enclosing = jnp.maximum(lp, lg) + jnp.maximum(rp, rg)  # (...)
    centre_distance = 0.5 * ((rp - lp) - (rg - lg))  # (...) centre of pred minus centre of target
    return 1.0 - iou + jnp.square(centre_distance / jnp.maximum(enclosing, eps))
