"""The caption decoder: InternVideo's layout (CoTrain clip_decoders.CaptionDecoder, built on a
CoCa implementation) <-> our models/caption_decoder.CaptionDecoder.

Official keys (under 'caption_decoder.' in the Lightning state_dict), ours on the right:
  visual_queries [Q, D]                                    pooler/visual_queries
  visual_attn_pooler.norm.gamma / .beta (buffer, zero)     pooler/query_norm/scale
  visual_attn_pooler.context_norm.gamma / .beta            pooler/context_norm/scale
  visual_attn_pooler.{to_q, to_kv, to_out}.weight          pooler/attn/{to_q, to_kv, to_out}
  visual_pooler_norm.{weight, bias}                        pooler/pooled_norm
  text_norm.{weight, bias}                                 text_norm
  multimodal_layers.i.0.fn.norm.gamma / .beta              causal_i/norm/scale
  multimodal_layers.i.0.fn.rotary_emb.inv_freq (buffer)    (computed)
  multimodal_layers.i.0.fn.fused_attn_ff_proj.weight       causal_i/attn/to_q, causal_i/attn/to_kv,
      [D + 2 hd + 2 ff, D], rows q | k | v | ff value | ff gate         causal_i/ff/ff_in
  multimodal_layers.i.0.fn.attn_out.weight, ff_out.1.weight   causal_i/attn/to_out, causal_i/ff/ff_out
  multimodal_layers.i.1.fn.norm.gamma / .beta              cross_i/norm/scale
  multimodal_layers.i.1.fn.{to_q, to_kv, to_out}.weight    cross_i/attn/{to_q, to_kv, to_out}
  multimodal_layers.i.1.fn.ff.{0, 2}.weight                cross_i/ff/{ff_in, ff_out}
  predictor.{0, 1, 3, 4}.{weight, bias}                    predictor_{norm_1, fc, norm_2, out}
Buffers are checked on import (a nonzero beta or a different inv_freq is refused: our model has no
place for them) and written on export. The fused projection is split into virtual keys
'<key>:q', ':kv', ':ff' so that the strict rule table stays one-to-one.
"""
from __future__ import annotations

import re

import numpy as np

from internvideo_jax.convert.common import ConversionError, Path, Rule, flatten, to_numpy

FUSED = "fused_attn_ff_proj.weight"
_FUSED_PARTS = ("q", "kv", "ff")  # row blocks of the fused projection, in order
_FUSED_PART_OF = {"to_q": "q", "to_kv": "kv", "ff_in": "ff"}  # our causal-block leaf -> block
_PREDICTOR = {"predictor_norm_1": "0", "predictor_fc": "1", "predictor_norm_2": "3",
              "predictor_out": "4"}


def inv_freq(head_dim: int) -> np.ndarray:
    """The reference's rotary buffer 1 / 10000^(arange(0, hd, 2) / hd), float32."""
    return (1.0 / (10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(
        np.float32)


def _key(path: Path) -> str:
    """Our decoder-relative path -> the official key (without 'caption_decoder.')."""
    first, leaf = path[0], path[-1]
    if first == "pooler":
        part = path[1]
        if part == "visual_queries":
            return "visual_queries"
        if part in ("query_norm", "context_norm"):
            return f"visual_attn_pooler.{'norm' if part == 'query_norm' else part}.gamma"
        if part == "attn":
            return f"visual_attn_pooler.{path[2]}.weight"
        return f"visual_pooler_norm.{'weight' if leaf == 'scale' else 'bias'}"
    if first == "text_norm":
        return f"text_norm.{'weight' if leaf == 'scale' else 'bias'}"
    if first in _PREDICTOR:
        return f"predictor.{_PREDICTOR[first]}.{'bias' if leaf == 'bias' else 'weight'}"
    m = re.fullmatch(r"(causal|cross)_(\d+)", first)
    assert m, path
    base = f"multimodal_layers.{m.group(2)}.{0 if m.group(1) == 'causal' else 1}.fn."
    if path[1] == "norm":
        return base + "norm.gamma"
    if m.group(1) == "causal":
        if path[2] in _FUSED_PART_OF:
            return f"{base}{FUSED}:{_FUSED_PART_OF[path[2]]}"
        return base + ("attn_out.weight" if path[2] == "to_out" else "ff_out.1.weight")
    if path[1] == "attn":
        return f"{base}{path[2]}.weight"
    return f"{base}ff.{0 if path[2] == 'ff_in' else 2}.weight"


def _transforms(path: Path, shape: tuple[int, ...]):
    if path[-1] != "kernel":  # norms, biases, queries
        return (lambda x: x, lambda x: x)
    if path[-2] in ("to_out", "ff_out"):  # (*in, D) <- [D, prod(in)]
        return (lambda w: w.T.reshape(shape), lambda k: k.reshape(-1, shape[-1]).T)
    return (lambda w: w.T.reshape(shape), lambda k: k.reshape(shape[0], -1).T)


def rules(params: dict, prefix: str = "caption_decoder.") -> list[Rule]:
    """Rules for a CaptionDecoder parameter tree; keys carry `prefix`."""
    return [Rule(("decoder",) + path, prefix + _key(path), *_transforms(path, tuple(v.shape)))
            for path, v in flatten(params).items()]


def buffers(params: dict, prefix: str = "caption_decoder.") -> dict[str, np.ndarray]:
    """The reference's persistent buffers for this decoder: zero LayerNorm betas, rotary inv_freq."""
    out = {}
    for path, v in flatten(params).items():
        if path[-1] == "scale" and _key(path).endswith(".gamma"):
            out[prefix + _key(path)[:-len("gamma")] + "beta"] = np.zeros(v.shape, np.float32)
    for name, layer in params.items():
        if name.startswith("causal_"):
            hd = layer["attn"]["to_q"]["kernel"].shape[-1]
            i = name.split("_")[1]
            out[f"{prefix}multimodal_layers.{i}.0.fn.rotary_emb.inv_freq"] = inv_freq(hd)
    return out


def split_fused(state_dict: dict, params: dict, prefix: str = "caption_decoder.") -> dict:
    """Fused [q | k | v | ff] rows -> virtual keys '<key>:q', ':kv', ':ff'; buffers checked and
    consumed. Returns a new dict; other keys pass through."""
    out = dict(state_dict)
    bad = []
    for key, want in buffers(params, prefix).items():
        if key not in out:
            continue  # buffers carry no weights: a state dict without them is accepted
        got = to_numpy(out.pop(key))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=0):
            expected = "zeros" if key.endswith("beta") else "the rotary 1/10000^(2i/hd)"
            bad.append((key, f"expected {expected}"))
    if bad:
        raise ConversionError("caption decoder", unexpected=[
            f"{k} ({why}: our model has no parameter for it)" for k, why in bad])
    for name, layer in params.items():
        if not name.startswith("causal_"):
            continue
        key = f"{prefix}multimodal_layers.{name.split('_')[1]}.0.fn.{FUSED}"
        if key not in out:
            continue
        w = to_numpy(out.pop(key))
        d, h, hd = layer["attn"]["to_q"]["kernel"].shape
        ff2 = 2 * layer["ff"]["ff_in"]["kernel"].shape[-1]
        sizes = (h * hd, 2 * hd, ff2)
        if w.ndim != 2 or w.shape != (sum(sizes), d):
            raise ConversionError("caption decoder", mismatched=[(key, tuple(w.shape),
                                                                  (sum(sizes), d))])
        q, kv, ff = np.split(w, np.cumsum(sizes)[:-1], axis=0)
        out[f"{key}:q"], out[f"{key}:kv"], out[f"{key}:ff"] = q, kv, ff
    return out


def join_fused(state_dict: dict, params: dict, prefix: str = "caption_decoder.") -> dict:
    """The inverse of split_fused for export: virtual keys -> the fused rows; buffers added."""
    out = {}
    for key, value in state_dict.items():
        base, _, part = key.rpartition(":")
        if base.endswith(FUSED) and part in _FUSED_PARTS:
            if part == "q":
                out[base] = np.concatenate([state_dict[f"{base}:{p}"] for p in _FUSED_PARTS])
            continue
        out[key] = value
    out.update(buffers(params, prefix))
    return out
