"""PyTorch VideoMAE models with the official state_dict keys, written from the references'
descriptions:

- VideoMAEClassifier (patch_embed.proj, blocks.i.{norm1, attn.{qkv.weight, q_bias, v_bias, proj},
  norm2, mlp.{fc1, fc2}}, fc_norm, head; spec.md section 1): used inside the CMA module
  (torch_models/cma.py). HF transformers' VideoMAEForVideoClassification is the installable one
  for VideoMAE alone.
- VideoMAEDetector (patch_embed.proj, blocks.i.*, norm, head): the AVA model of
  MCG-NJU/VideoMAE-Action-Detection (modeling_finetune.py VisionTransformer; see
  internvideo_jax/models/ava_head.py for the facts), with `roi_align` below standing in for
  torchvision.ops.roi_align (torchvision is not installed here). The reference for
  tests/test_convert_ava.py.
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


# ---- pretraining with dual masking (OpenGVLab/VideoMAEv2 modeling_pretrain.py) ------------------
class PretrainEncoder(nn.Module):
    def __init__(self, dim, depth, heads, patch, tubelet, num_tokens, mlp_ratio):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch, tubelet)
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, dim)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, mask):  # mask (N, L) bool, True = hidden from the encoder
        x = self.patch_embed(x) + self.pos_embed
        x = x[~mask].reshape(x.shape[0], -1, x.shape[-1])  # visible tokens, in token order
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class PretrainDecoder(nn.Module):
    def __init__(self, dim, depth, heads, num_outputs, mlp_ratio):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, x, num_out):
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, x.shape[1] - num_out:]))


class VideoMAEPretrain(nn.Module):
    """(N, 3, T, H, W), mask (N, L) bool (True = masked), decode_mask (N, L) bool or None
    (True = not decoded) -> predictions (N, D, 3 * tubelet * patch^2).

    The decoder sees [visible encoder tokens + their decoder sinusoid, mask_token + the sinusoid
    of each position to decode]; the positions to decode are the masked ones without a decode
    mask (VideoMAE V1), else every position the decode mask leaves, visible ones included. The
    decoder blocks take the encoder's mlp_ratio (48/11 for ViT-g), as in the reference.
    """

    def __init__(self, *, dim, depth, heads, decoder_dim, decoder_depth, decoder_heads, patch,
                 tubelet, num_frames, image_size, mlp_ratio=4.0):
        super().__init__()
        n = (num_frames // tubelet) * (image_size // patch) ** 2
        self.encoder = PretrainEncoder(dim, depth, heads, patch, tubelet, n, mlp_ratio)
        self.decoder = PretrainDecoder(decoder_dim, decoder_depth, decoder_heads,
                                       3 * tubelet * patch * patch, mlp_ratio)
        self.encoder_to_decoder = nn.Linear(dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sinusoid_table(n, decoder_dim)[None],
                             persistent=False)

    def forward(self, x, mask, decode_mask=None):
        decoded = mask if decode_mask is None else ~decode_mask  # positions given mask tokens
        vis = self.encoder_to_decoder(self.encoder(x, mask))  # (N, K, Dd)
        b, _, d = vis.shape
        pos = self.pos_embed.expand(b, -1, -1)
        pos_vis = pos[~mask].reshape(b, -1, d)
        pos_dec = pos[decoded].reshape(b, -1, d)
        tokens = torch.cat([vis + pos_vis, self.mask_token + pos_dec], dim=1)
        return self.decoder(tokens, pos_dec.shape[1])


# ---- AVA detection (MCG-NJU/VideoMAE-Action-Detection) ----------------------------------------
def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's RoIAlign point read of feature (C, H, W) at continuous (y, x) -> (C,):
    0 outside [-1, H] x [-1, W]; coordinates below 0 read at 0; at or past the last cell, the
    last cell only."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return feature.new_zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feature[:, y0, x0] + hy * lx * feature[:, y0, x1]
            + ly * hx * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float,
              sampling_ratio: int, aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align(features (B, C, H, W), rois (K, 5) [batch index, x1, y1, x2,
    y2], ...) -> (K, C, output_size, output_size), point by point (slow: for tests only).

    Per box: start = coordinate * spatial_scale (- 0.5 when aligned); extent = end - start, at
    least 1 unless aligned; bin = extent / output_size; points per bin and axis sampling_ratio,
    or ceil(extent / output_size) when sampling_ratio <= 0; point (i + 0.5) * bin / n from the
    bin's start; a bin's value the sum of its points' _bilinear reads over max(n_y * n_x, 1).
    """
    offset = 0.5 if aligned else 0.0
    out = features.new_zeros((rois.shape[0], features.shape[1], output_size, output_size))
    for k, (index, x1, y1, x2, y2) in enumerate(rois.tolist()):
        feature = features[int(index)]
        sx, sy = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        extent_x, extent_y = x2 * spatial_scale - offset - sx, y2 * spatial_scale - offset - sy
        if not aligned:
            extent_x, extent_y = max(extent_x, 1.0), max(extent_y, 1.0)
        bin_x, bin_y = extent_x / output_size, extent_y / output_size
        ny = sampling_ratio if sampling_ratio > 0 else math.ceil(extent_y / output_size)
        nx = sampling_ratio if sampling_ratio > 0 else math.ceil(extent_x / output_size)
        count = max(ny * nx, 1)
        for ph in range(output_size):
            for pw in range(output_size):
                total = features.new_zeros(features.shape[1])
                for iy in range(ny):
                    y = sy + ph * bin_y + (iy + 0.5) * bin_y / ny
                    for ix in range(nx):
                        x = sx + pw * bin_x + (ix + 0.5) * bin_x / nx
                        total = total + _bilinear(feature, y, x)
                out[k, :, ph, pw] = total / count
    return out


class VideoMAEDetector(nn.Module):
    """The reference's AVA VisionTransformer: (N, 3, T, H, W) + rois (K, 5) [clip index, x1, y1,
    x2, y2] in input pixels -> logits (K, num_classes).

    State dict: patch_embed.proj.{weight, bias}, blocks.i.*, norm.{weight, bias} (LayerNorm eps
    1e-6 after the blocks; no fc_norm), head.{weight, bias}. The sinusoid table is no parameter
    (the reference's pos_embed is a plain attribute: not in its state dict); built for
    num_frames x image_size and resized per frame to the input's token grid, bicubic, as the
    reference's interpolate_pos_embed_online. tokens() -> normalised tokens and their grid;
    pool() -> (K, D) features: time mean, RoIAlign 7x7 at 1 / patch (sampling_ratio 0, aligned
    False), max over the bins; forward adds `head`.
    """

    def __init__(self, *, dim, depth, heads, patch, tubelet, num_frames, image_size,
                 num_classes, mlp_ratio=4.0, sampling_ratio=0):
        super().__init__()
        self.patch, self.sampling_ratio = patch, sampling_ratio
        self.grid_size = (image_size // patch, image_size // patch)
        self.patch_embed = PatchEmbed(dim, patch, tubelet)
        n = (num_frames // tubelet) * self.grid_size[0] * self.grid_size[1]
        self.register_buffer("pos_embed", sinusoid_table(n, dim)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.pool_size = 7

    def tokens(self, x):
        x = self.patch_embed.proj(x)  # (N, D, t, h, w)
        n, d, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, t*h*w, D)
        pos = self.pos_embed.reshape(t, self.grid_size[0], self.grid_size[1], d)
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                            align_corners=False)  # (t, D, h, w)
        x = x + pos.permute(0, 2, 3, 1).reshape(1, t * h * w, d)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), (t, h, w)

    def pool(self, tokens, grid, rois):
        t, h, w = grid
        x = tokens.reshape(tokens.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3).mean(2)
        x = roi_align(x, rois, self.pool_size, 1.0 / self.patch, self.sampling_ratio)
        return F.max_pool2d(x, self.pool_size).flatten(1)  # (K, D)

    def forward(self, x, rois):
        tokens, grid = self.tokens(x)
        return self.head(self.pool(tokens, grid, rois))
