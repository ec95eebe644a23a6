"""PyTorch modules for InternVideo's multimodal model with the official state_dict keys, written
from the reference's description (spec.md section 3):

  InternVideoCLIP     keys as under 'clip.': visual.* (UniFormerV2 video tower, global UniBlocks
                      only, no head), visual_ln_post, visual_proj, token_embedding,
                      positional_embedding, transformer.resblocks.i.*, ln_final, text_projection,
                      logit_scale
  CaptionDecoder      keys as under 'caption_decoder.' (CoCa-style: attention pooler, parallel
                      causal multi-query blocks with rotary positions, cross-attention blocks,
                      predictor)
  InternVideoMultimodal   {'clip': InternVideoCLIP, 'caption_decoder': CaptionDecoder}: its
                      state_dict is the Lightning checkpoint's 'state_dict'.
  InternVideoQA       the open-ended video QA model of the downstream code (CoTrain
                      clip_module.py, clip_qa_type 'vtc_cap'): the same with clip.visual_proj,
                      clip.text_projection and caption_decoder.predictor removed, plus
                      vqa_classifier.{1, 2, 5} (see models/video_qa.py for the facts).

Weights exported by `python -m internvideo_jax.convert export --to pth` load with
load_state_dict(strict=True). Independent of our JAX code: token-first (L, N, C) layouts,
nn.MultiheadAttention, fused q/k/v/ff projections as the reference stores them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from internvideo_jax.torch_models.uniformerv2 import (LayerNorm, ResidualAttentionBlock,
                                                     VisionTransformer)


class TextTransformer(nn.Module):
    """CLIP's text transformer: resblocks with a causal mask, (L, N, C) tokens."""

    def __init__(self, width, layers, heads, context_length):
        super().__init__()
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, local=False, attn_mask=mask)
             for _ in range(layers)])

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class InternVideoCLIP(nn.Module):
    def __init__(self, *, image_size, patch, width, layers, heads, return_list, embed_dim,
                 text_width, text_layers, text_heads, context_length=77, vocab_size=49408):
        super().__init__()
        self.visual = VisionTransformer(image_size=image_size, patch=patch, width=width,
                                        layers=layers, heads=heads, return_list=return_list,
                                        local=False, temporal_kernel=1, temporal_stride=1,
                                        num_classes=0)
        self.visual_ln_post = nn.LayerNorm(width)
        self.visual_proj = nn.Parameter(width ** -0.5 * torch.randn(width, embed_dim))
        self.transformer = TextTransformer(text_width, text_layers, text_heads, context_length)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context_length, text_width))
        self.ln_final = LayerNorm(text_width)
        self.text_projection = nn.Parameter(text_width ** -0.5 * torch.randn(text_width,
                                                                            embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592600))  # log(1 / 0.07)

    def encode_video(self, video, return_all_feats=False):
        """(N, 3, T, H, W) -> (N, E) (N, W without visual_proj) [and the last layer's tokens
        (L, N, T, C)]."""
        fused, tokens = self.visual(video, return_all_feats=True)
        x = self.visual_ln_post(fused)
        if self.visual_proj is not None:  # None in the QA model: (N, W)
            x = x @ self.visual_proj
        return (x, tokens) if return_all_feats else x

    def encode_text(self, ids, return_all_feats=False):
        """(N, 77) -> (N, E) at the eot (largest id) (N, C without text_projection) [and all
        tokens after ln_final (N, 77, C)]."""
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        feats = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
        if self.text_projection is not None:  # None in the QA model: (N, C)
            feats = feats @ self.text_projection
        return (feats, x) if return_all_feats else feats


class CocaLayerNorm(nn.Module):
    """LayerNorm with a weight ('gamma') and a zero bias buffer ('beta'), eps 1e-5."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, *args):
        return x + self.fn(x, *args)


class Rotary(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, n):
        angles = torch.outer(torch.arange(n, dtype=self.inv_freq.dtype), self.inv_freq)
        return torch.cat([angles, angles], dim=-1)  # (n, dim)


def _rotate(x, angles):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


class SwiGLU(nn.Module):
    def forward(self, x):
        value, gate = x.chunk(2, dim=-1)
        return F.silu(gate) * value


def _multi_query(q, k, v, heads, causal):
    """q (N, Lq, h*d), k/v (N, S, d): h query heads share one key/value head."""
    n, lq, _ = q.shape
    q = q.view(n, lq, heads, -1).transpose(1, 2)  # (N, h, Lq, d)
    sim = torch.einsum("nhid,njd->nhij", q * q.shape[-1] ** -0.5, k)
    if causal:
        sim = sim.masked_fill(torch.ones(lq, k.shape[1], dtype=torch.bool).triu(1),
                              float("-inf"))
    out = torch.einsum("nhij,njd->nhid", sim.softmax(dim=-1), v)
    return out.transpose(1, 2).reshape(n, lq, -1)


class ParallelTransformerBlock(nn.Module):
    def __init__(self, dim, dim_head, heads, ff_mult=4):
        super().__init__()
        self.heads = heads
        self.norm = CocaLayerNorm(dim)
        self.sizes = (dim_head * heads, dim_head, dim_head, 2 * ff_mult * dim)
        self.rotary_emb = Rotary(dim_head)
        self.fused_attn_ff_proj = nn.Linear(dim, sum(self.sizes), bias=False)
        self.attn_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.ff_out = nn.Sequential(SwiGLU(), nn.Linear(ff_mult * dim, dim, bias=False))

    def forward(self, x):
        x = self.norm(x)
        q, k, v, ff = self.fused_attn_ff_proj(x).split(self.sizes, dim=-1)
        n, length = x.shape[:2]
        angles = self.rotary_emb(length)
        q = _rotate(q.view(n, length, self.heads, -1), angles[:, None]).reshape(n, length, -1)
        k = _rotate(k, angles)
        return self.attn_out(_multi_query(q, k, v, self.heads, causal=True)) + self.ff_out(ff)


class CrossAttention(nn.Module):
    def __init__(self, dim, dim_head, heads, context_dim=None, norm_context=False,
                 parallel_ff=False, ff_mult=4):
        super().__init__()
        self.heads = heads
        context_dim = context_dim or dim
        self.norm = CocaLayerNorm(dim)
        self.context_norm = CocaLayerNorm(context_dim) if norm_context else nn.Identity()
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim_head, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * ff_mult * dim, bias=False), SwiGLU(),
                                nn.Linear(ff_mult * dim, dim, bias=False)) if parallel_ff else None

    def forward(self, x, context):
        x, context = self.norm(x), self.context_norm(context)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        out = self.to_out(_multi_query(self.to_q(x), k, v, self.heads, causal=False))
        return out + self.ff(x) if self.ff is not None else out


class CaptionDecoder(nn.Module):
    """(video tokens (L, N, T, Cv) as the video tower's return_all_feats, text tokens (N, S, D))
    -> logits (N, S, vocab)."""

    def __init__(self, n_layers, width, vision_width, heads, vocab_size=49408,
                 num_visual_queries=256, ff_mult=4):
        super().__init__()
        dim_head = width // heads
        self.visual_queries = nn.Parameter(width ** -0.5 * torch.randn(num_visual_queries, width))
        self.visual_attn_pooler = CrossAttention(width, dim_head, heads, context_dim=vision_width,
                                                 norm_context=True)
        self.visual_pooler_norm = nn.LayerNorm(width)
        self.text_norm = nn.LayerNorm(width)
        self.multimodal_layers = nn.ModuleList([nn.ModuleList([
            Residual(ParallelTransformerBlock(width, dim_head, heads, ff_mult)),
            Residual(CrossAttention(width, dim_head, heads, parallel_ff=True, ff_mult=ff_mult)),
        ]) for _ in range(n_layers)])
        self.predictor = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                       nn.LayerNorm(width), nn.Linear(width, vocab_size))

    def forward(self, video_tokens, text_tokens):
        feats = video_tokens.permute(1, 0, 2, 3).flatten(1, 2)  # (N, L*T, Cv)
        queries = self.visual_queries.expand(feats.shape[0], -1, -1)
        pooled = self.visual_pooler_norm(self.visual_attn_pooler(queries, feats))
        x = self.text_norm(text_tokens)
        for causal, cross in self.multimodal_layers:
            x = cross(causal(x), pooled)
        return self.predictor(x)


class InternVideoMultimodal(nn.Module):
    """The Lightning module's weights: state_dict keys 'clip.*' and 'caption_decoder.*'."""

    def __init__(self, clip_kwargs: dict, decoder_layers: int, decoder_heads: int,
                 num_visual_queries=256):
        super().__init__()
        self.clip = InternVideoCLIP(**clip_kwargs)
        self.caption_decoder = CaptionDecoder(
            decoder_layers, clip_kwargs["text_width"], clip_kwargs["width"], decoder_heads,
            clip_kwargs.get("vocab_size", 49408), num_visual_queries)

    def forward(self, video, ids, caption_length=None):
        """-> (video features (N, E), text features (N, E), caption logits (N, n-1, vocab))."""
        v, video_tokens = self.clip.encode_video(video, return_all_feats=True)
        t, text_tokens = self.clip.encode_text(ids, return_all_feats=True)
        n = caption_length or ids.shape[1]
        return v, t, self.caption_decoder(video_tokens, text_tokens[:, :n - 1])


class InternVideoQA(nn.Module):
    """The downstream video QA model ('vtc_cap'): keys 'clip.*' (no visual_proj, text_projection),
    'caption_decoder.*' (no predictor) and 'vqa_classifier.{1, 2, 5}.*'."""

    def __init__(self, clip_kwargs: dict, decoder_layers: int, decoder_heads: int,
                 num_answers: int, num_visual_queries=256, dropout=0.5):
        super().__init__()
        self.clip = InternVideoCLIP(**clip_kwargs)
        self.clip.visual_proj = None
        self.clip.text_projection = None
        self.caption_decoder = CaptionDecoder(
            decoder_layers, clip_kwargs["text_width"], clip_kwargs["width"], decoder_heads,
            clip_kwargs.get("vocab_size", 49408), num_visual_queries)
        self.caption_decoder.predictor = nn.Identity()
        hs = clip_kwargs["width"] + 2 * clip_kwargs["text_width"]
        self.vqa_classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hs, 2 * hs), nn.LayerNorm(2 * hs), nn.GELU(),
            nn.Dropout(dropout), nn.Linear(2 * hs, num_answers))

    def forward(self, video, ids):
        """(N, 3, T, H, W), (N, 77) -> answer logits (N, num_answers)."""
        v, video_tokens = self.clip.encode_video(video, return_all_feats=True)  # (N, W)
        t, text_tokens = self.clip.encode_text(ids, return_all_feats=True)  # (N, C)
        states = self.caption_decoder(video_tokens, text_tokens[:, :-1])  # (N, 76, C)
        cap = states[torch.arange(states.shape[0]), ids.argmax(dim=-1)]  # (N, C)
        return self.vqa_classifier(torch.cat([cap, v, t], dim=1))
