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

import dataclasses
import re

import numpy as np

from internvideo_jax.convert import architecture as arch
from internvideo_jax.convert.cli_common import (abstract_variables, known_size, read_weights,
                                               save_state_dict, say_size)
from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, Path, Rule, clip_transforms,
                                           export_state_dict, flatten, import_state_dict,
                                           strip_prefixes)
from internvideo_jax.convert.registry import Family, register
from internvideo_jax.models import architecture
from internvideo_jax.models import uniformerv2 as u

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


# ---- the converter CLI's UniFormerV2 family (python -m internvideo_jax.convert) ----------------
def import_uniformerv2(a) -> tuple[dict, dict, dict]:
    """An official UniFormerV2 .pyth/.pth -> our variables {'params', 'batch_stats'}.

    Everything is read off the tensors (convert/architecture.py): width, depth, patch, resolution,
    the global UniBlocks (one per dec.j, on the last layers), local UniBlocks, conv1's temporal
    kernel (3 = the temporal downsample, stride 2), the frozen-backbone variant (no balance) and
    the classes. Returns (variables, the model's boxed abstract variables, the description)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    sd = strip_prefixes(read_weights(a), WRAPPER_PREFIXES)
    chosen = known_size(u.get_size, a.size) if a.size else None
    found = arch.uniformerv2_checkpoint(sd, (chosen.width, chosen.heads) if chosen else None)
    size = found.size
    if chosen:
        arch.check_against(size, dataclasses.replace(chosen, embed_dim=size.embed_dim), a.size,
                           u.SIZES, "UniFormerV2")
    first, last = size.return_list[0], size.return_list[-1]
    say_size("UniFormerV2", found.name,
             f"width {size.width}, {size.layers} layers, {size.heads} heads, patch {size.patch}, "
             f"{size.image_size}px, {len(size.return_list)} global UniBlocks on layers "
             f"{first}-{last}, conv1 temporal kernel {found.temporal_kernel} stride "
             f"{found.temporal_stride}" + (", local UniBlocks" if found.local else "")
             + (", the frozen-backbone variant (no balance)" if found.frozen else "")
             + f", {a.num_classes or found.num_classes} classes", a.size)
    num_classes = a.num_classes or found.num_classes
    model = u.UniFormerV2Classifier(size, num_classes, temporal_kernel=found.temporal_kernel,
                                    temporal_stride=found.temporal_stride, local=found.local,
                                    frozen=found.frozen)
    frames = a.frames - a.frames % found.temporal_stride
    video = jax.ShapeDtypeStruct((1, frames, size.image_size, size.image_size, 3), jnp.float32)
    boxed = abstract_variables(model, video)
    description = architecture.describe(
        "uniformerv2_classifier", size, found.name, num_classes=num_classes,
        temporal_kernel=found.temporal_kernel, temporal_stride=found.temporal_stride,
        local=found.local, frozen=found.frozen)
    return import_official(sd, nn.meta.unbox(boxed)), boxed, description


def export_uniformerv2(variables: dict, meta: dict, a) -> None:
    """Our UniFormerV2 classifier variables -> an official .pyth ({'model_state': state dict},
    float32), loadable with strict=True by internvideo_jax.torch_models.uniformerv2.UniFormerV2."""
    n = save_state_dict(export_official(variables), "model_state", a.out, a.overwrite)
    print(f"wrote {n} tensors (official UniFormerV2 layout, float32) to {a.out}")


register(Family(label="UniFormerV2", models=("uniformerv2_classifier",),
                import_fn=import_uniformerv2, exports=lambda params: "backbone" in params,
                export_fn=export_uniformerv2, formats=("pth",),
                format_error="UniFormerV2 has no HF transformers implementation: export it with "
                             "--to pth (the official .pyth layout).",
                sizes="tiny, B/16, L/14, L/14@336"))
