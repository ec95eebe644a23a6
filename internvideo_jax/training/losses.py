"""Losses. All computed in float32 whatever the compute dtype.

VideoMAE reconstruction ("norm pixel" target, as the released code):
  1. pixels back on the [0, 1] scale (our pipeline ships uint8, so this is pixels / 255: the same
     as the reference's un-normalisation of an ImageNet-normalised input);
  2. cut into tubelet patches, pixels of a patch in (pt, ph, pw) order, channel last;
  3. per patch and per channel: (x - mean) / (sqrt(unbiased var) + 1e-6), eps outside the sqrt;
  4. flattened as (pt ph pw c); MSE over the masked tokens only (VideoMAE V2's dual masking:
     over the masked tokens the decoder predicts, dual_masked_reconstruction_loss).

Multimodal: CLIP contrastive loss over the global batch, caption decoder cross entropy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from internvideo_jax.models.clip import l2_normalize
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


def dual_masked_reconstruction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array,
                                    decoder_mask: jax.Array) -> jax.Array:
    """VideoMAE V2's loss under dual masking (OpenGVLab/VideoMAEv2 engine_for_pretraining.py):
    squared error on the decoded positions the encoder mask hid, the mean over P*C per token, then
    the mean over those tokens of the whole batch (their count varies per clip: the running cell
    mask is fixed, the tube mask random).

    Args:
      pred: (B, D, P*C) predictions for the decoded positions (decoder_mask False), ascending.
      target: (B, N, P*C) targets for all tokens.
      mask: (B, N) bool, the encoder's mask (True = masked).
      decoder_mask: (B, N) bool, True = not decoded, N - D True per row.
    Returns:
      scalar float32: sum over the batch of the per-token means on encoder-masked decoded tokens,
      over their number (1 if there are none: the loss is then 0).
    """
    decoded_idx, _ = split_by_mask(decoder_mask, decoder_mask.shape[1] - pred.shape[1])
    target_decoded = gather_tokens(target, decoded_idx)  # (B, D, P*C)
    weight = gather_tokens(mask, decoded_idx).astype(jnp.float32)  # (B, D): 1 = in the loss
    per_token = jnp.mean(jnp.square(pred.astype(jnp.float32) - target_decoded), axis=-1)
    return jnp.sum(per_token * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def contrastive_loss(video_features: jax.Array, text_features: jax.Array,
                     logit_scale: jax.Array,
                     negative_features: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE of CLIP over the whole global batch, with optional hard negatives.

    Args:
      video_features, text_features: (B, E), pair i matching pair i; B is the GLOBAL batch: under
        jit the arrays are sharded over devices and processes, and `v @ t.T` is computed over all
        of them (XLA gathers the other shards), so every example's negatives are the global batch
        and the gradient flows through the gathered features.
      logit_scale: () the learnable log temperature; used as exp(clip(logit_scale, 0, ln 100)).
      negative_features: (B, K, E) or None: K hard-negative texts of each video (captions that
        differ from its own in one respect, e.g. the verb). They join the video->text softmax of
        their own video only, as extra columns after the batch's texts (Momeni et al., "Verbs in
        Action", ICCV 2023); text->video is unchanged.
    Returns:
      (loss: mean of the video->text and text->video cross entropies, logits (B, B) float32:
      the in-batch video x text similarities, without the negatives).
    """
    v = l2_normalize(video_features)
    t = l2_normalize(text_features)
    scale = jnp.exp(jnp.clip(logit_scale.astype(jnp.float32), 0.0, jnp.log(100.0)))
    logits = scale * v @ t.T  # (B, B): row = video, column = text
    labels = jnp.arange(logits.shape[0])
    v2t_logits = logits
    if negative_features is not None:
        n = l2_normalize(negative_features)  # (B, K, E)
        own = scale * jnp.einsum("be,bke->bk", v, n)  # (B, K): each video with its negatives
        v2t_logits = jnp.concatenate([logits, own], axis=1)  # (B, B + K)
    v2t = optax.softmax_cross_entropy_with_integer_labels(v2t_logits, labels).mean()
    t2v = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    return (v2t + t2v) / 2, logits


def caption_loss(logits: jax.Array, ids: jax.Array, pad_id: int = 0) -> jax.Array:
    """Next-token cross entropy of the caption decoder, padding ignored.

    logits (B, L-1, V) are the decoder's outputs for inputs ids[:, :-1]; targets are ids[:, 1:]
    (start-of-text is never a target; end-of-text is, so the decoder learns where captions end).
    Mean over the non-padding targets of the batch.
    """
    targets = ids[:, 1:]  # (B, L-1)
    valid = (targets != pad_id).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1.0)
