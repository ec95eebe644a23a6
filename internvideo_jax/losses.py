"""Losses. All computed in float32 whatever the compute dtype.

VideoMAE reconstruction ("norm pixel" target, as the released code):
  1. pixels back on the [0, 1] scale (our pipeline ships uint8, so this is pixels / 255: the same
     as the reference's un-normalisation of an ImageNet-normalised input);
  2. cut into tubelet patches, pixels of a patch in (pt, ph, pw) order, channel last;
  3. per patch and per channel: (x - mean) / (sqrt(unbiased var) + 1e-6), eps outside the sqrt;
  4. flattened as (pt ph pw c); MSE over the masked tokens only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from internvideo_jax.models.layers import patchify
from internvideo_jax.models.videomae import gather_tokens, split_by_mask


def norm_pixel_target(pixels01: jax.Array, patch: tuple[int, int, int],
                      normalize: bool = True) -> jax.Array:
    """Reconstruction target for every token.

    Args:
      pixels01: (B, T, H, W, C) video on the [0, 1] scale.
      patch: (tubelet, patch, patch).
      normalize: per-patch normalisation (norm_pix_loss); False gives raw [0, 1] pixels.
    Returns:
      (B, N, pt*ph*pw*C) float32.
    """
    x = patchify(pixels01.astype(jnp.float32), patch)  # (B, N, P, C)
    if normalize:
        mean = x.mean(axis=2, keepdims=True)  # (B, N, 1, C)
        var = x.var(axis=2, keepdims=True, ddof=1)  # unbiased, as torch.var
        x = (x - mean) / (jnp.sqrt(var) + 1e-6)
    return x.reshape(*x.shape[:2], -1)  # (B, N, P*C)


def masked_reconstruction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over masked tokens.

    Args:
      pred: (B, M, P*C) predictions for the masked tokens in ascending token order.
      target: (B, N, P*C) targets for all tokens.
      mask: (B, N) bool, True = masked, M True per row.
    Returns:
      scalar float32: mean over B, M and P*C.
    """
    _, masked_idx = split_by_mask(mask, pred.shape[1])
    target_masked = gather_tokens(target, masked_idx)  # (B, M, P*C)
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target_masked))
