"""CLIP text encoder weights: OpenAI CLIP / InternVideo layout and HF transformers -> ours.

OpenAI layout (also InternVideo's multimodal checkpoints, under a 'clip.' prefix):
  token_embedding.weight (V, W), positional_embedding (77, W), transformer.resblocks.i.
  {attn.in_proj_weight [3W, W], attn.in_proj_bias, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2},
  ln_final, text_projection (W, E) (a matrix used as x @ text_projection).
HF transformers' CLIPTextModelWithProjection / CLIPModel names are renamed to those, with
q_proj/k_proj/v_proj concatenated into in_proj (q, k, v order) and text_projection.weight
[E, W] transposed. Visual keys (OpenAI 'visual.*', HF 'vision_model.*', 'visual_projection.*',
'logit_scale') are left out: the text import takes the text tower only, and says so.
"""
from __future__ import annotations

import re

import numpy as np

from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, Path, Rule, clip_transforms, flatten,
                                           import_state_dict, strip_prefixes, to_numpy)

WRAPPER_PREFIXES = ("module.", "model.", "clip.")
_VISUAL = ("visual.", "vision_model.", "visual_projection.", "logit_scale")
_HF_RENAMES = [  # (HF fragment, OpenAI fragment)
    (r"^text_model\.embeddings\.token_embedding\.", "token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1."),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
]


def hf_to_openai(state_dict: dict) -> dict[str, np.ndarray]:
    """HF CLIP text keys -> OpenAI CLIP text keys (q/k/v fused into in_proj)."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        value = to_numpy(value)
        if key == "text_projection.weight":
            out["text_projection"] = value.T
            continue
        m = re.match(
            r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        for pattern, repl in _HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} {kind}: q/k/v projections incomplete: {sorted(parts)}")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = np.concatenate(
            [parts["q"], parts["k"], parts["v"]])
    return out


def _name(path: Path) -> str:
    names = [n for n in path if n != "ln"]
    names = [f"transformer.resblocks.{n.split('_')[1]}" if n.startswith("resblocks_") else n
             for n in names]
    renames = {**CLIP_LEAF_NAMES, "token_embedding": "token_embedding.weight"}
    names[-1] = renames.get(names[-1], names[-1])
    return ".".join(names)


def text_rules(text_params: dict) -> list[Rule]:
    """Rules for a clip.TextEncoder parameter tree (OpenAI names)."""
    return [Rule(path, _name(path), *clip_transforms(path[-1], tuple(v.shape)))
            for path, v in flatten(text_params).items()]


def import_text(state_dict: dict, target_params: dict) -> dict:
    """An OpenAI-, InternVideo- or HF-layout CLIP state dict -> TextEncoder params (strict on the
    text tower; visual keys are dropped)."""
    state_dict = strip_prefixes(dict(state_dict), WRAPPER_PREFIXES)
    if any(k.startswith("text_model.") for k in state_dict):
        state_dict = hf_to_openai({k: v for k, v in state_dict.items()
                                   if k.startswith("text_model.") or k == "text_projection.weight"})
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_VISUAL)}
    shapes = {p: tuple(v.shape) for p, v in flatten(target_params).items()}
    return import_state_dict(text_rules(target_params), state_dict, shapes, "CLIP text encoder")
