"""The multimodal video encoder with its text encoder and caption decoder (InternVideo section 3).

VideoTextModel(video (B, T, H, W, 3) normalised, ids (B, 77)) ->
  {'video': (B, E) video features, 'text': (B, E) text features, 'logit_scale': (),
   'caption_logits': (B, n-1, vocab) next-token logits for ids[:, 1:n]}: the caption decoder reads
  the video backbone's last-layer tokens and the text encoder's tokens at ids[:, :n-1], as the
  reference does (its `return_all_feats` of both encoders).
encode_video / encode_text give the (unnormalised) features alone, for evaluation.
Images are T=1 videos.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models import caption_decoder, clip, uniformerv2

Dtype = Any


@dataclasses.dataclass(frozen=True)
class MultimodalSize:
    video: uniformerv2.UniFormerV2Size
    text: clip.TextSize
    decoder: caption_decoder.CaptionDecoderSize


SIZES: dict[str, MultimodalSize] = {
    name: MultimodalSize(uniformerv2.SIZES[name], clip.TEXT_SIZES[name],
                         caption_decoder.DECODER_SIZES[name])
    for name in ("tiny", "B/16", "L/14")
}


def get_size(name: str) -> MultimodalSize:
    if name not in SIZES:
        raise ValueError(f"Unknown multimodal size {name!r}; known: {sorted(SIZES)}.")
    s = SIZES[name]
    if s.video.embed_dim != s.text.embed_dim:
        raise ValueError(f"{name}: video embed_dim {s.video.embed_dim} != text embed_dim "
                         f"{s.text.embed_dim}")
    return s


class VideoTextModel(nn.Module):
    size: MultimodalSize
    caption: bool = True  # build the caption decoder
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32
    remat: str = "none"  # both encoders' and the caption decoder's layers (layers.REMAT_POLICIES)
    scan: bool = False  # both encoders' blocks as one nn.scan each (layers.scan_blocks)
    temporal_kernel: int = 1  # the video tower's conv1 (uniformerv2.VideoTower)

    def setup(self):
        self.visual = uniformerv2.VideoTower(self.size.video, self.drop_path_rate,
                                             dtype=self.dtype, remat=self.remat, scan=self.scan,
                                             temporal_kernel=self.temporal_kernel)
        self.textual = clip.TextEncoder(self.size.text, dtype=self.dtype, scan=self.scan,
                                        remat=self.remat)
        self.logit_scale = self.param("logit_scale", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(1 / 0.07)), ()), (), jnp.float32)
        if self.caption:
            self.decoder = caption_decoder.CaptionDecoder(self.size.decoder, dtype=self.dtype,
                                                          remat=self.remat)

    def encode_video(self, video: jax.Array, deterministic: bool = True) -> jax.Array:
        """(B, T, H, W, 3) -> (B, E)."""
        return self.visual(video, deterministic)[0]

    def encode_text(self, ids: jax.Array) -> jax.Array:
        """(B, 77) int ids -> (B, E)."""
        return self.textual(ids)

    def __call__(self, video: jax.Array, ids: jax.Array, deterministic: bool = True,
                 caption_length: int | None = None) -> dict:
        """caption_length: the decoder reads ids[:, :caption_length] (default: all)."""
        video_features, visual_tokens = self.visual(video, deterministic)  # (B, E), (B, M, W)
        text_features, text_tokens = self.textual(ids, tokens=True)  # (B, E), (B, 77, Wt)
        out = {"video": video_features, "text": text_features, "logit_scale": self.logit_scale}
        if self.caption:
            n = caption_length or ids.shape[1]
            out["caption_logits"] = self.decoder(visual_tokens, text_tokens[:, :n - 1])
        return out
