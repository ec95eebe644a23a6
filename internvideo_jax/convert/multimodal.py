"""InternVideo multimodal checkpoints (video tower + CLIP text tower) <-> our VideoTextModel.

The released multimodal checkpoints are Lightning files: {'state_dict': {'clip.<key>': ...}}. Under
'clip.' (spec.md section 3; the reference's `clip_vit_only_global` video tower):
  visual.conv1.weight [W, 3, k, p, p], visual.class_embedding, visual.positional_embedding,
  visual.ln_pre, visual.transformer.resblocks.i.*, visual.transformer.{temporal_cls_token, dpe.j,
  dec.j.*, balance}                 <- our visual/encoder/*: the UniFormerV2 backbone's names with
                                       'backbone.' read as 'visual.' (no classifier head)
  visual_ln_post.{weight, bias}, visual_proj [W, E]    <- visual/visual_ln_post, visual/visual_proj
  token_embedding.weight, positional_embedding, transformer.resblocks.i.*, ln_final,
  text_projection                   <- textual/* (OpenAI CLIP names, convert/clip.py)
  logit_scale                       <- logit_scale
The caption decoder's reference key names are not known to us: a checkpoint that has decoder
tensors is refused listing them, unless they are named with --drop-prefix (printed, never silent),
and the imported model is built without a decoder (model.caption_weight=0).
"""
from __future__ import annotations

import numpy as np

from internvideo_jax.convert import clip as conv_clip
from internvideo_jax.convert import uniformerv2 as conv_uni
from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, Path, Rule, export_state_dict,
                                           flatten, identity, import_state_dict, strip_prefixes)

WRAPPER_PREFIXES = ("module.", "model.", "clip.")


def _rule(path: Path, value) -> Rule:
    shape = tuple(value.shape)
    if path[:2] == ("visual", "encoder"):
        backbone = ("params", "backbone") + path[2:]
        name = "visual." + conv_uni._official_name(backbone)[len("backbone."):]
        return Rule(path, name, *conv_uni._transforms(backbone, shape))
    if path[:2] == ("visual", "visual_ln_post"):
        return Rule(path, f"visual_ln_post.{CLIP_LEAF_NAMES.get(path[-1], path[-1])}", identity,
                    identity)
    if path in (("visual", "visual_proj"), ("logit_scale",)):
        return Rule(path, path[-1], identity, identity)
    if path[0] == "textual":
        text, = conv_clip.text_rules({path[1:][0]: _nest(path[2:], value)})
        return Rule(path, text.key, text.to_ours, text.to_torch)
    raise ValueError(f"no official name for {'/'.join(path)}: the caption decoder's reference "
                     f"layout is not supported; build the model with model.caption_weight=0.")


def _nest(path: Path, value):
    """A one-leaf nested dict {'a': {'b': value}} for a path ('a', 'b')."""
    for name in reversed(path):
        value = {name: value}
    return value


def rules(params: dict) -> list[Rule]:
    """Rules for a VideoTextModel(caption=False) parameter tree."""
    return [_rule(path, value) for path, value in flatten(params).items()]


def unwrap(checkpoint: dict) -> dict:
    """A Lightning file ({'state_dict': ...}) or a raw state dict -> keys without 'clip.'."""
    state_dict = checkpoint.get("state_dict", checkpoint)
    return strip_prefixes(dict(state_dict), WRAPPER_PREFIXES)


def import_internvideo(checkpoint: dict, target_params: dict,
                       drop_prefixes: tuple[str, ...] = ()) -> dict:
    """An InternVideo multimodal checkpoint -> our VideoTextModel params, strictly. Keys under
    `drop_prefixes` (after 'clip.' is removed) are left out and listed on stdout."""
    state_dict = unwrap(checkpoint)
    dropped = sorted(k for k in state_dict if k.startswith(tuple(drop_prefixes))) \
        if drop_prefixes else []
    if dropped:
        print(f"left out as asked ({len(dropped)} tensors under {list(drop_prefixes)}): "
              f"{dropped[:10]}{'...' if len(dropped) > 10 else ''}")
        state_dict = {k: v for k, v in state_dict.items() if k not in set(dropped)}
    shapes = {p: tuple(v.shape) for p, v in flatten(target_params).items()}
    return import_state_dict(rules(target_params), state_dict, shapes,
                             "InternVideo multimodal (clip.*)")


def export_internvideo(params: dict) -> dict[str, np.ndarray]:
    """Our VideoTextModel params (no decoder) -> the 'clip.'-prefixed state dict, float32."""
    return {f"clip.{k}": v for k, v in export_state_dict(rules(params), params).items()}
