"""Mixup / CutMix with soft labels, on the accelerator (inside the jitted step), as timm's Mixup
in 'batch' mode: one lambda per batch, partner = the batch reversed, CutMix with probability
`switch_prob` when both are enabled, label smoothing folded into the targets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """(B,) int -> (B, classes): 1 - smoothing + smoothing/classes on the label, smoothing/classes
    elsewhere (timm's on/off values)."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def cutmix_box(rng: jax.Array, lam: jax.Array, height: int, width: int):
    """A box covering about (1 - lam) of the frame, centred uniformly, clipped to the frame.

    Returns (y0, y1, x0, x1) int32 and the corrected lam = 1 - box area / frame area.
    """
    ratio = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
    ky, kx = jax.random.split(rng)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return (y0, y1, x0, x1), lam


def mixup_cutmix(rng: jax.Array, video: jax.Array, labels: jax.Array, num_classes: int, *,
                 mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 smoothing: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """Mix a batch. video (B, T, H, W, C) float, labels (B,) int -> (video, soft targets (B, K)).

    The same box / weight applies to every frame of a clip.
    """
    k_switch, k_lam, k_box = jax.random.split(rng, 3)
    use_cutmix = jnp.asarray(False)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
    elif cutmix_alpha > 0:
        use_cutmix = jnp.asarray(True)
    alpha_mix = mixup_alpha if mixup_alpha > 0 else cutmix_alpha
    alpha_cut = cutmix_alpha if cutmix_alpha > 0 else mixup_alpha
    lam = jnp.where(use_cutmix, jax.random.beta(k_lam, alpha_cut, alpha_cut),
                    jax.random.beta(k_lam, alpha_mix, alpha_mix))
    partner = video[::-1]
    height, width = video.shape[2], video.shape[3]
    (y0, y1, x0, x1), lam_cut = cutmix_box(k_box, lam, height, width)
    ys = jnp.arange(height)[:, None]
    xs = jnp.arange(width)[None, :]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # (H, W)
    cut = jnp.where(inside[None, None, :, :, None], partner, video)
    mixed = lam * video + (1.0 - lam) * partner
    video = jnp.where(use_cutmix, cut, mixed.astype(video.dtype))
    lam = jnp.where(use_cutmix, lam_cut, lam)
    targets = smooth_one_hot(labels, num_classes, smoothing)
    return video, lam * targets + (1.0 - lam) * targets[::-1]
