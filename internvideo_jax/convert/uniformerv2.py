"""UniFormerV2 weights: the official .pyth layout (OpenGVLab/UniFormerV2) <-> our variables.

Our UniFormerV2Classifier variables {'params': ..., 'batch_stats': ...} map one to one onto the
official keys (spec.md section 2), under backbone. / backbone.transformer.:
  backbone/conv1 (k, p, p, 3, W)              <- conv1.weight [W, 3, k, p, p]
  resblocks_i/attn/in_proj_kernel, _bias      <- resblocks.i.attn.in_proj_weight [3W, W] / bias [3W]
      as (W, 3, heads, hd) / (3, heads, hd); out_proj_kernel (heads, hd, W) <- out_proj.weight
  resblocks_i/lmhra{1,2}/bn, conv_in, conv_t, conv_out   <- lmhra{1,2}.pos_embed.{0,1,2,3}
      (BN running statistics in 'batch_stats'; num_batches_tracked is not used)
  dpe_j, dec_j, temporal_cls_token, balance   <- dpe.j, dec.j, temporal_cls_token, balance
  proj_norm, proj_head (outside the backbone) <- proj.0, proj.2
Released files hold the state dict raw or under 'model_state', sometimes with a 'module.' prefix.
"""
from __future__ import annotations

import re

import numpy as np

from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, Path, Rule, clip_transforms,
                                           export_state_dict, flatten, import_state_dict,
                                           strip_prefixes)

WRAPPER_PREFIXES = ("module.",)
_LMHRA_PARTS = {"bn": "0", "conv_in": "1", "conv_t": "2", "conv_out": "3"}


def _transforms(path: Path, shape: tuple[int, ...]):
    leaf, module = path[-1], path[-2]
    if leaf == "conv1":  # (k, p, p, 3, W) <- [W, 3, k, p, p]
        return (lambda w: w.transpose(2, 3, 4, 1, 0), lambda k: k.transpose(4, 3, 0, 1, 2))
    if leaf == "kernel" and (module == "conv_t" or module.startswith("dpe_")):
        # depthwise (kt, kh, kw, C) <- [C, 1, kt, kh, kw]
        return (lambda w: w[:, 0].transpose(1, 2, 3, 0), lambda k: k.transpose(3, 0, 1, 2)[:, None])
    if leaf == "kernel" and module in ("conv_in", "conv_out"):  # (Cin, Cout) <- [Cout, Cin, 1,1,1]
        return (lambda w: w[:, :, 0, 0, 0].T, lambda k: k.T[:, :, None, None, None])
    return clip_transforms(leaf, shape)  # attention, Linear, the rest as is


def _official_name(path: Path) -> str:
    collection, *names = path
    leaf = names[-1]
    if names[0] in ("proj_norm", "proj_head"):
        part = "0" if names[0] == "proj_norm" else "2"
        return f"backbone.transformer.proj.{part}." + ("weight" if leaf in ("scale", "kernel")
                                                       else "bias")
    assert names[0] == "backbone", path
    out = ["backbone"]
    body = names[1:]
    if body[0] not in ("conv1", "class_embedding", "positional_embedding", "ln_pre"):
        out.append("transformer")
    for i, name in enumerate(body):
        m = re.fullmatch(r"(resblocks|dpe|dec)_(\d+)", name)
        if m:
            out += [m.group(1), m.group(2)]
        elif name == "ln":  # our ClipLayerNorm wraps a LayerNorm named 'ln'
            continue
        elif name in _LMHRA_PARTS and i > 0 and body[i - 1].startswith("lmhra"):
            out += ["pos_embed", _LMHRA_PARTS[name]]
        else:
            out.append(name)
    renames = {**CLIP_LEAF_NAMES, "mean": "running_mean", "var": "running_var"}
    if collection == "params" and body[0] == "conv1":
        return "backbone.conv1.weight"
    out[-1] = renames.get(out[-1], out[-1])
    return ".".join(out)


def official_rules(variables: dict) -> list[Rule]:
    """Rules for a UniFormerV2Classifier's variables ({'params', optional 'batch_stats'})."""
    rules = []
    for path, value in flatten(variables).items():
        to_ours, to_torch = _transforms(path, tuple(value.shape))
        rules.append(Rule(path, _official_name(path), to_ours, to_torch))
    return rules


def import_official(state_dict: dict, target_variables: dict) -> dict:
    """An official UniFormerV2 state dict -> our variables, strictly (common.import_state_dict)."""
    state_dict = state_dict.get("model_state", state_dict)
    state_dict = strip_prefixes(dict(state_dict), WRAPPER_PREFIXES)
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    shapes = {p: tuple(v.shape) for p, v in flatten(target_variables).items()}
    return import_state_dict(official_rules(target_variables), state_dict, shapes,
                             "UniFormerV2 (official)")


def export_official(variables: dict) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (BatchNorm num_batches_tracked written as 0)."""
    return with_num_batches_tracked(export_state_dict(official_rules(variables), variables))


def with_num_batches_tracked(state_dict: dict) -> dict:
    """Add BatchNorm's num_batches_tracked (0; we do not count) beside every running_mean, as
    PyTorch's strict load_state_dict expects."""
    for key in list(state_dict):
        if key.endswith(".running_mean"):
            state_dict[key[:-len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state_dict
