"""A PyTorch VideoMAE classifier with the official state_dict keys (patch_embed.proj, blocks.i.{norm1,
attn.{qkv.weight, q_bias, v_bias, proj}, norm2, mlp.{fc1, fc2}}, fc_norm, head), written from the
reference's description (spec.md section 1): used inside the CMA module (torch_models/cma.py).
HF transformers' VideoMAEForVideoClassification is the installable one for VideoMAE alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The fixed position table (n, D): sin on even, cos on odd channels of pos / 10000^(2(j//2)/D)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * (j // 2) / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, d = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(n, length, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (N, h, L, hd) each
        attn = (q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, d)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch, tubelet):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), (tubelet, patch, patch))

    def forward(self, x):  # (N, 3, T, H, W) -> (N, T'h'w', D)
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEClassifier(nn.Module):
    """(N, 3, T, H, W) -> logits (N, classes); tokens() / classify() split it as CMA needs."""

    def __init__(self, *, dim, depth, heads, patch, tubelet, num_frames, image_size,
                 num_classes, mlp_ratio=4.0):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch, tubelet)
        n = (num_frames // tubelet) * (image_size // patch) ** 2
        self.register_buffer("pos_embed", sinusoid_table(n, dim)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        assert math.isclose(mlp_ratio * dim, int(mlp_ratio * dim))

    def tokens(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x  # (N, L, D), no final norm: the head pools them

    def classify(self, tokens):
        return self.head(self.fc_norm(tokens.mean(1)))

    def forward(self, x):
        return self.classify(self.tokens(x))
