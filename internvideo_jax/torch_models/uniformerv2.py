"""A PyTorch UniFormerV2 classifier written from the reference's description, with the official
module names, so its state_dict has the official .pyth keys: exported weights load with
load_state_dict(strict=True). Input (N, C, T, H, W) normalised video -> (N, classes) logits.

An implementation independent of ours (channels-first, (L, N*T, C) token layout,
nn.MultiheadAttention and real Conv3d/BatchNorm3d modules): the parity tests check the JAX model
against it (tests/test_convert_uniformerv2.py).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LocalMHRA(nn.Module):
    def __init__(self, d_model, dw_reduction=1.5):
        super().__init__()
        r = int(d_model // dw_reduction)
        self.pos_embed = nn.Sequential(
            nn.BatchNorm3d(d_model),
            nn.Conv3d(d_model, r, 1),
            nn.Conv3d(r, r, (3, 1, 1), padding=(1, 0, 0), groups=r),
            nn.Conv3d(r, d_model, 1))

    def forward(self, x):  # (N, C, T, H, W)
        return self.pos_embed(x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, local, attn_mask=None):
        super().__init__()
        self.local = local
        self.attn_mask = attn_mask  # (L, L) additive, e.g. CLIP text's causal mask
        if local:
            self.lmhra1 = LocalMHRA(d_model)
            self.lmhra2 = LocalMHRA(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)

    def _local(self, x, module, t):
        tmp = x[1:]
        l, nt, c = tmp.shape
        n, h = nt // t, int(l ** 0.5)
        tmp = tmp.view(h, h, n, t, c).permute(2, 4, 3, 0, 1).contiguous()  # N, C, T, H, W
        tmp = tmp + module(tmp)
        tmp = tmp.view(n, c, t, l).permute(3, 0, 2, 1).contiguous().view(l, nt, c)
        return torch.cat([x[:1], tmp], dim=0)

    def forward(self, x, t=1):  # x: (1 + HW, N*T, C)
        if self.local:
            x = self._local(x, self.lmhra1, t)
        y = self.ln_1(x)
        mask = None if self.attn_mask is None else self.attn_mask.to(x.dtype)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        if self.local:
            x = self._local(x, self.lmhra2, t)
        return x + self.mlp(self.ln_2(x))


class Extractor(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
            ("dropout", nn.Dropout(0.5)), ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)
        self.ln_3 = LayerNorm(d_model)

    def forward(self, x, y):  # x: (1, N, C) query, y: (T*L, N, C)
        q, kv = self.ln_1(x), self.ln_3(y)
        x = x + self.attn(q, kv, kv, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, return_list, local, num_classes, frozen=False):
        super().__init__()
        self.return_list, self.frozen = return_list, frozen
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, local) for _ in range(layers)])
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.dpe = nn.ModuleList([nn.Conv3d(width, width, 3, padding=1, groups=width)
                                  for _ in return_list])
        self.dec = nn.ModuleList([Extractor(width, heads) for _ in return_list])
        if not frozen:  # the frozen-backbone variant classifies the query token alone
            self.balance = nn.Parameter(torch.zeros(width))
        if num_classes:  # the multimodal video tower has no head
            self.proj = nn.Sequential(nn.LayerNorm(width), nn.Dropout(0.5),
                                      nn.Linear(width, num_classes))

    def forward(self, x, t, return_all_feats=False, return_features=False):
        """x: (L, N*T, C) -> logits (N, classes), or the fused feature (N, C) without a head;
        return_all_feats also gives the last layer's tokens (L, N, T, C); return_features gives
        (fused (N, C), the last global UniBlock's input tokens (N, T*L, C)) instead."""
        l, nt, c = x.shape
        n, h = nt // t, int((l - 1) ** 0.5)
        cls_token = self.temporal_cls_token.repeat(1, n, 1)
        j = -1
        for i, block in enumerate(self.resblocks):
            x = block(x, t)
            if i in self.return_list:
                j += 1
                tmp = x.clone().view(l, n, t, c)
                feats = tmp[1:].permute(1, 3, 2, 0).reshape(n, c, t, h, h)
                feats = self.dpe[j](feats).view(n, c, t, l - 1).permute(3, 0, 2, 1)
                tmp[1:] = tmp[1:] + feats
                tmp = tmp.permute(2, 0, 1, 3).flatten(0, 1)  # (T*L, N, C)
                cls_token = self.dec[j](cls_token, tmp)
        if self.frozen:
            fused = cls_token[0]
        else:
            weight = torch.sigmoid(self.balance)
            residual = x.view(l, n, t, c)[0].mean(1)  # mean over frames of the per-frame CLS
            fused = (1 - weight) * cls_token[0] + weight * residual
        if return_features:
            return fused, tmp.transpose(0, 1)
        out = self.proj(fused) if hasattr(self, "proj") else fused
        return (out, x.view(l, n, t, c)) if return_all_feats else out


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch, width, layers, heads, return_list, local,
                 temporal_kernel, temporal_stride, num_classes, frozen=False):
        super().__init__()
        self.stride = temporal_stride
        self.conv1 = nn.Conv3d(3, width, (temporal_kernel, patch, patch),
                               (temporal_stride, patch, patch),
                               ((temporal_kernel - 1) // 2, 0, 0), bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn((image_size // patch) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, return_list, local, num_classes,
                                       frozen)

    def forward(self, x, return_all_feats=False, return_features=False):  # (N, 3, T, H, W)
        x = self.conv1(x)
        n, c, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, c, dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # (L, N*T, C)
        return self.transformer(x, t, return_all_feats, return_features)


class UniFormerV2(nn.Module):
    """state_dict keys: backbone.conv1.weight, backbone.transformer.resblocks.0.attn..., as the
    released .pyth files."""

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = VisionTransformer(**kwargs)

    def forward(self, x):
        return self.backbone(x)
