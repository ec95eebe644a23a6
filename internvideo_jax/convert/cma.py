"""Cross-Model Attention weights <-> a PyTorch state dict (torch_models/cma.py).

The reference has no CMA code, so the layout is ours, built from the two official layouts:
  videomae.*        the frozen VideoMAE classifier, official VideoMAE keys (blocks.i.attn.qkv...,
                    fc_norm, head; convert/videomae.py)
  uniformerv2.*     the UniFormerV2 classifier, official .pyth keys with BatchNorm statistics
                    (backbone.*, backbone.transformer.proj.*; convert/uniformerv2.py)
  u_from_m.i.*, m_from_u.i.*   the gated blocks: context_norm, context_proj, ln_1,
                    attn.{in_proj_weight, in_proj_bias, out_proj} (nn.MultiheadAttention),
                    attn_gate, ln_2, mlp.{c_fc, c_proj}, ffn_gate (CLIP names)
  combine           the two score weights' logits
"""
from __future__ import annotations

import numpy as np

from internvideo_jax.convert import uniformerv2 as conv_uni
from internvideo_jax.convert import videomae as conv_videomae
from internvideo_jax.convert.cli_common import save_state_dict
from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, Rule, clip_transforms,
                                           export_state_dict, flatten, identity,
                                           import_state_dict)
from internvideo_jax.convert.registry import Family, register


def _block_name(path) -> str:
    direction, i = path[0].rsplit("_", 1)
    names = [n for n in path[1:] if n != "ln"]  # ClipLayerNorm's inner LayerNorm
    names[-1] = CLIP_LEAF_NAMES.get(names[-1], names[-1])
    return f"{direction}.{i}." + ".".join(names)


def rules(variables: dict) -> list[Rule]:
    """Rules for CrossModelAttention variables {'params', optional 'batch_stats'}."""
    out = []
    params = variables["params"]
    for r in conv_videomae.official_rules(params["videomae"]):
        out.append(Rule(("params", "videomae") + r.path, "videomae." + r.key, r.to_ours,
                        r.to_torch))
    uni = {c: tree["uniformerv2"] for c, tree in variables.items() if "uniformerv2" in tree}
    for r in conv_uni.official_rules(uni):
        out.append(Rule((r.path[0], "uniformerv2") + r.path[1:], "uniformerv2." + r.key,
                        r.to_ours, r.to_torch))
    for path, value in flatten(params).items():
        if path[0].startswith(("u_from_m_", "m_from_u_")):
            out.append(Rule(("params",) + path, _block_name(path),
                            *clip_transforms(path[-1], tuple(value.shape))))
        elif path == ("combine",):
            out.append(Rule(("params", "combine"), "combine", identity, identity))
    return out


def import_torch(state_dict: dict, target_variables: dict) -> dict:
    """A CMA state dict (torch_models.cma.CrossModelAttention) -> our variables, strictly."""
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    shapes = {p: tuple(v.shape) for p, v in flatten(target_variables).items()}
    return import_state_dict(rules(target_variables), state_dict, shapes, "CMA")


def export_torch(variables: dict) -> dict[str, np.ndarray]:
    """Our CMA variables -> the state dict of torch_models.cma.CrossModelAttention, float32."""
    return conv_uni.with_num_batches_tracked(export_state_dict(rules(variables), variables))


# ---- the converter CLI's CMA family (python -m internvideo_jax.convert export) -----------------
def export_cma(variables: dict, meta: dict, a) -> None:
    """Our CMA variables -> one .pth ({'model': state dict}, float32) for torch_models.cma."""
    n = save_state_dict(export_torch(variables), "model", a.out, a.overwrite)
    print(f"wrote {n} tensors (videomae.*, uniformerv2.* official, CMA blocks; "
          f"float32) to {a.out}: load with internvideo_jax.torch_models.cma")


register(Family(label="CMA", models=(), import_fn=None,  # Cross-Model Attention: export only
                exports=lambda params: {"videomae", "uniformerv2"} <= set(params),
                export_fn=export_cma, formats=("pth",),
                format_error="CMA exports with --to pth only (torch_models.cma layout)."))
