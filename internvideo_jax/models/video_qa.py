"""Open-ended video question answering on the multimodal model: InternVideo's `vtc_cap` head.

VideoQAModel(video (B, T, H, W, 3) normalised, question_ids (B, 77)) -> answer logits (B, V) f32,
trained with cross-entropy over the answer vocabulary V.

What the reference does (OpenGVLab/InternVideo, InternVideo1/Downstream/multi-modalities-downstream,
CoTrain/modules/clip_module.py `CLIP.__init__` and `infer`, objectives.py
`compute_openend_vqa` branch `qa_type == "vtc_cap"`, clip_decoders.py `CaptionDecoder`,
InternVideo/clip_utils/model.py `encode_video` / `encode_text`):
- the towers' output projections are removed: `self.clip.text_projection = None`,
  `self.clip.visual_proj = None`; so the video feature is visual_ln_post(fused) (B, Wv) and the
  text feature is ln_final(tokens) at the EOT (B, Wt), neither normalised;
- the caption decoder's predictor is replaced by nn.Identity: its output is the residual stream
  after the last cross-attention block, no final norm (B, L, Wt); the decoder reads the video
  backbone's last-layer tokens and the text tokens `text_all_feats[:, :-1]`;
- the decoder output is taken at `text_ids.argmax(dim=-1)` (the EOT: the largest id in the row,
  padding is 0), then `torch.cat([decoder feature, video feature, text feature], dim=1)`:
  hs = Wv + 2 Wt;
- `vqa_classifier = nn.Sequential(Dropout(clip_cls_dropout), Linear(hs, 2 hs), LayerNorm(2 hs),
  GELU(), Dropout(clip_cls_dropout), Linear(2 hs, msrvttqa_label_size))`: state-dict keys
  vqa_classifier.{1, 2, 5}.{weight, bias}; nn.GELU is the exact (erf) one, LayerNorm eps 1e-5;
  clip_cls_dropout defaults to 0.5 (CoTrain/config.py); init_weights: Linear normal(0.02), zero
  bias; answer vocabularies 1501 (MSR-VTT), 1001 (MSVD), 1541 (TGIF-Frame);
- F.cross_entropy(vqa_logits, vqa_labels); the question is the dataset's question text as is,
  CLIP-tokenized with truncate=True (datasets/video/video_base_dataset.py collate); an answer
  outside the train answer list gets the label -100, ignored by the loss, and V is that list's
  length + 1 (datasets/video/msrvttqa.py `get_answer_label`).
The released fine-tuned QA checkpoints (InternVideo-MM-L-14 on MSR-VTT, MSVD, TGIF-QA, listed in
InternVideo1/README.md) are this module's state dict: no clip.visual_proj, clip.text_projection or
caption_decoder.predictor.*, and vqa_classifier.*; convert/multimodal.py imports them
(`--model internvideo_qa`).

Our parameters: the VideoTextModel's (models/multimodal.py) under the same paths, less the three
parts the reference removes (visual_proj, text_projection, the decoder's predictor): visual
(encoder, visual_ln_post), textual, logit_scale (unused here, kept as the reference keeps
clip.logit_scale), decoder, plus vqa_classifier/{fc, norm, out}. A multimodal pretraining
checkpoint loads into it by path (its visual_proj, text_projection and predictor are not used);
the head starts from its initialisation.

The decoder here reads all 77 text tokens: it is causal, so position i sees ids[:, :i+1] only and
the feature at an EOT at position <= 75 is the reference's exactly; an EOT at 76 (a question cut
to the context length) is read where the reference would index past its 76 positions.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.models import caption_decoder, clip, uniformerv2
from internvideo_jax.models.layers import gelu, zeros
from internvideo_jax.models.multimodal import MultimodalSize

Dtype = Any
_normal_002 = nn.initializers.normal(0.02)  # the reference's objectives.init_weights


def eot_positions(ids: jax.Array) -> jax.Array:
    """(B, L) ids -> (B,) the EOT position: the largest id in each row (CLIP's rule, as
    clip.TextEncoder pools; zero padding after it never wins)."""
    return jnp.argmax(ids, axis=-1)


def at_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x (B, L, D), positions (B,) -> (B, D): x[b, positions[b]]."""
    return jnp.take_along_axis(x, positions[:, None, None], axis=1)[:, 0]


class QAVideoTower(nn.Module):
    """uniformerv2.VideoTower without visual_proj: -> (visual_ln_post(fused) (B, W), the last
    backbone layer's tokens of every frame (B, T'(1+hw), W), what the caption decoder reads)."""

    size: uniformerv2.UniFormerV2Size
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False
    temporal_kernel: int = 1  # conv1's, as uniformerv2.VideoTower
    temporal_stride: int = 1

    @nn.compact
    def __call__(self, video: jax.Array, deterministic: bool = True):
        fused, frames, _ = uniformerv2.UniFormerV2Encoder(
            self.size, self.temporal_kernel, self.temporal_stride,
            drop_path_rate=self.drop_path_rate, mlp_dropout=self.mlp_dropout,
            dtype=self.dtype, remat=self.remat, scan=self.scan, name="encoder")(
                video, deterministic)  # (B, W), (B, T', 1+hw, W)
        feature = clip.ClipLayerNorm(self.dtype, name="visual_ln_post")(fused)  # (B, W)
        b, t2, n, w = frames.shape
        return feature, frames.reshape(b, t2 * n, w)  # (B, W), (B, T'(1+hw), W)


def _without_text_projection(size: clip.TextSize):
    """(trans_in_fn, trans_out_fn) for nn.map_variables that take text_projection out of
    clip.TextEncoder's parameters (the reference's QA model has none): init leaves it out of the
    tree; apply hands the encoder a zero stand-in, whose projected output is never read (the QA
    model reads the encoder's tokens)."""

    def add_projection(variables):
        params = dict(variables.get("params", {}))
        params["text_projection"] = jnp.zeros((size.width, size.embed_dim), jnp.float32)
        return dict(variables, params=params)

    def drop_projection(variables):
        params = {k: v for k, v in variables.get("params", {}).items() if k != "text_projection"}
        return dict(variables, params=params)

    return add_projection, drop_projection


class VQAClassifier(nn.Module):
    """The reference's vqa_classifier: dropout -> fc (hs -> 2hs) -> LayerNorm -> GELU (exact)
    -> dropout -> out (2hs -> answers). (B, hs) -> (B, answers) f32. The answers axis is not
    sharded ('vocab' and 'mlp' both map to the tensor axis)."""

    num_answers: int
    dropout: float = 0.5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        hidden = 2 * x.shape[-1]
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = nn.Dense(hidden, dtype=self.dtype, name="fc",
                     kernel_init=nn.with_logical_partitioning(_normal_002, ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(zeros, ("mlp",)))(x)  # (B, 2hs)
        x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm",
                         scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 ("mlp",)),
                         bias_init=nn.with_logical_partitioning(zeros, ("mlp",)))(x)
        x = gelu(x).astype(self.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(self.num_answers, dtype=self.dtype, name="out",
                          kernel_init=nn.with_logical_partitioning(_normal_002, ("mlp", None)),
                          bias_init=nn.with_logical_partitioning(zeros, (None,)))(x)
        return logits.astype(jnp.float32)  # (B, V)


class VideoQAModel(nn.Module):
    """(video (B, T, H, W, 3) normalised, question_ids (B, 77) zero-padded CLIP ids) -> answer
    logits (B, num_answers) f32. head_dropout: the reference's clip_cls_dropout (both dropouts of
    the head); the video tower's mlp_dropout is VideoTower's (clip_evl_dropout 0.5)."""

    size: MultimodalSize
    num_answers: int
    dtype: Dtype = jnp.float32
    drop_path_rate: float = 0.0
    remat: str = "none"  # both encoders' and the decoder's layers (layers.REMAT_POLICIES)
    scan: bool = False  # both encoders' blocks as one nn.scan each (layers.scan_blocks)
    head_dropout: float = 0.5
    temporal_kernel: int = 1  # the video tower's conv1 (uniformerv2.VideoTower)

    def setup(self):
        self.visual = QAVideoTower(self.size.video, self.drop_path_rate, dtype=self.dtype,
                                   remat=self.remat, scan=self.scan,
                                   temporal_kernel=self.temporal_kernel)
        add_projection, drop_projection = _without_text_projection(self.size.text)
        initializing = self.is_initializing()
        self.textual = nn.map_variables(
            clip.TextEncoder, "params", trans_in_fn=add_projection,
            trans_out_fn=drop_projection, init=initializing, mutable=initializing)(
                self.size.text, dtype=self.dtype, scan=self.scan, remat=self.remat)
        self.logit_scale = self.param("logit_scale", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(1 / 0.07)), ()), (), jnp.float32)
        self.decoder = caption_decoder.CaptionDecoder(self.size.decoder, dtype=self.dtype,
                                                      remat=self.remat, predictor=False)
        self.vqa_classifier = VQAClassifier(self.num_answers, self.head_dropout, self.dtype)

    def encode(self, video: jax.Array, question_ids: jax.Array,
               deterministic: bool = True) -> dict:
        """-> {'video': (B, Wv) visual_ln_post(fused), 'text': (B, Wt) ln_final at the EOT,
        'decoder': (B, 77, Wt) the decoder's hidden states at every position, 'eot': (B,)}."""
        video_feature, visual_tokens = self.visual(video, deterministic)  # (B, Wv), (B, M, Wv)
        _, text_tokens = self.textual(question_ids, tokens=True)  # (B, 77, Wt)
        eot = eot_positions(question_ids)  # (B,)
        states = self.decoder(visual_tokens, text_tokens)  # (B, 77, Wt)
        return {"video": video_feature, "text": at_positions(text_tokens, eot),
                "decoder": states, "eot": eot}

    def answer_features(self, video: jax.Array, question_ids: jax.Array,
                        deterministic: bool = True) -> jax.Array:
        """What the head classifies: [decoder state at the EOT, video feature, text feature]
        (B, Wt + Wv + Wt), f32."""
        e = self.encode(video, question_ids, deterministic)
        return jnp.concatenate([at_positions(e["decoder"], e["eot"]),
                                e["video"].astype(jnp.float32),
                                e["text"].astype(jnp.float32)], axis=-1)  # (B, hs)

    def __call__(self, video: jax.Array, question_ids: jax.Array,
                 deterministic: bool = True) -> jax.Array:
        features = self.answer_features(video, question_ids, deterministic)  # (B, hs)
        return self.vqa_classifier(features, deterministic)  # (B, V)
