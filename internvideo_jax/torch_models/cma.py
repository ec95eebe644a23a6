"""A PyTorch Cross-Model Attention model with the state_dict keys of convert/cma.py: the frozen
VideoMAE and UniFormerV2 classifiers ('videomae.*', 'uniformerv2.*', their official keys), the
gated cross-attention blocks ('u_from_m.i.*', 'm_from_u.i.*') and 'combine'. Written from
models/cma.py's description with PyTorch's own modules (nn.MultiheadAttention, LayerNorm), so
exported CMA weights run without this project.
forward(videomae_video, uniformer_video) (N, 3, T, H, W) each, normalised its own way ->
(log of the combined probabilities, VideoMAE logits, UniFormerV2 logits), (N, classes) each.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from internvideo_jax.torch_models.uniformerv2 import LayerNorm, QuickGELU, UniFormerV2
from internvideo_jax.torch_models.videomae import VideoMAEClassifier


class GatedCrossAttention(nn.Module):
    """x (N, Lq, Dq), context (N, Lk, Dk) -> (N, Lq, Dq); tanh gates start at 0 (the identity)."""

    def __init__(self, dim, context_dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.context_norm = LayerNorm(context_dim)
        self.context_proj = nn.Linear(context_dim, dim)
        self.ln_1 = LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ln_2 = LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(dim, hidden)),
                                              ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(hidden, dim))]))
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, context):
        c = self.context_proj(self.context_norm(context))
        q = self.ln_1(x)
        x = x + torch.tanh(self.attn_gate) * self.attn(q, c, c, need_weights=False)[0]
        return x + torch.tanh(self.ffn_gate) * self.mlp(self.ln_2(x))


class CrossModelAttention(nn.Module):
    def __init__(self, videomae_kwargs: dict, uniformer_kwargs: dict, *, depth=1, heads=8,
                 directions=("uniformer_from_videomae", "videomae_from_uniformer")):
        super().__init__()
        self.videomae = VideoMAEClassifier(**videomae_kwargs)
        self.uniformerv2 = UniFormerV2(**uniformer_kwargs)
        dm, du = videomae_kwargs["dim"], uniformer_kwargs["width"]
        self.u_from_m = nn.ModuleList([GatedCrossAttention(du, dm, heads) for _ in range(depth)]
                                      if "uniformer_from_videomae" in directions else [])
        self.m_from_u = nn.ModuleList([GatedCrossAttention(dm, du, heads) for _ in range(depth)]
                                      if "videomae_from_uniformer" in directions else [])
        self.combine = nn.Parameter(torch.zeros(2))
        self.depth = depth

    def forward(self, videomae_video, uniformer_video):
        m = self.videomae.tokens(videomae_video)  # (N, L, Dm)
        fused, u_tokens = self.uniformerv2.backbone(uniformer_video, return_features=True)
        q = fused[:, None]  # (N, 1, Du)
        for i in range(self.depth):
            context = torch.cat([q, u_tokens], dim=1)
            new_q = self.u_from_m[i](q, m) if len(self.u_from_m) else q
            m = self.m_from_u[i](m, context) if len(self.m_from_u) else m
            q = new_q
        m_logits = self.videomae.classify(m)
        u_logits = self.uniformerv2.backbone.transformer.proj(q[:, 0])
        w = torch.softmax(self.combine, dim=0)
        logits = torch.logaddexp(torch.log(w[0]) + torch.log_softmax(m_logits, -1),
                                 torch.log(w[1]) + torch.log_softmax(u_logits, -1))
        return logits, m_logits, u_logits
