"""Strict name/shape mapping between PyTorch state dicts and our parameter trees.

A conversion is a table of Rules: (our parameter path, source key, to_ours, to_torch). Applying it
consumes every source tensor and fills every target parameter, or fails listing what is missing,
unexpected and shape-mismatched. Nothing is ever silently zero or left at its initial value.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

# re-exported: the tree helpers live in internvideo_jax/tree.py
from internvideo_jax.tree import Path, flatten, unflatten  # noqa: F401

Transform = Callable[[np.ndarray], np.ndarray]


class ConvertUserError(Exception):
    """A user mistake (a wrong --src, --out, --size, ...): `python -m internvideo_jax.convert`
    prints it as `error: ...` on stderr and exits with status 2, without a traceback. Anything
    else that goes wrong is a bug and keeps its traceback."""


class ConversionError(ConvertUserError, ValueError):
    """A checkpoint does not match the model; the message lists every offending key.

    mismatched: (key, the checkpoint's shape, the shape the model expects), both in the
    checkpoint's own (torch) layout."""

    def __init__(self, what: str, missing=(), unexpected=(), mismatched=()):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), \
            list(mismatched)
        lines = [f"{what}: the checkpoint does not match the model."]
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): {self.missing}")
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): {self.unexpected}")
        if self.mismatched:
            lines.append(f"shape mismatches ({len(self.mismatched)}): " + ", ".join(
                f"{k}: checkpoint {a}, model expects {b}" for k, a, b in self.mismatched))
        super().__init__("\n".join(lines))


class UsageError(ConvertUserError, ValueError):
    """A command-line value that cannot work (an unknown --size, a malformed --mesh, ...)."""


class OutputRefused(ConvertUserError, ValueError):
    """--out is a training workdir (or inside one), or an existing target without --overwrite."""


class NotACheckpoint(ConvertUserError, ValueError):
    """--src is not a file or directory the converter can read weights from."""


class SourceNotFound(ConvertUserError, FileNotFoundError):
    """--src does not exist, or a directory lacks the files it needs."""


@dataclasses.dataclass(frozen=True)
class Rule:
    path: Path  # our parameter, e.g. ('encoder', 'norm', 'scale')
    key: str  # the PyTorch state-dict key, e.g. 'encoder.norm.weight'
    to_ours: Transform  # torch tensor (numpy) -> our array
    to_torch: Transform  # our array -> torch layout


def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear_to_ours(x: np.ndarray) -> np.ndarray:
    return x.T


# Our FusedAttention (models/clip.py) <- PyTorch nn.MultiheadAttention, by our leaf name:
# in_proj_weight [3W, W] -> (W, 3, heads, hd); in_proj_bias [3W] -> (3, heads, hd);
# out_proj.weight [W, W] -> (heads, hd, W); then any other 'kernel' is a Linear weight transposed.
# Our leaf names -> the PyTorch ones in CLIP-style modules.
CLIP_LEAF_NAMES = {"scale": "weight", "kernel": "weight", "in_proj_kernel": "in_proj_weight",
                   "out_proj_kernel": "out_proj.weight", "out_proj_bias": "out_proj.bias"}


def clip_transforms(leaf: str, shape: tuple[int, ...]) -> tuple[Transform, Transform]:
    """(to_ours, to_torch) for a CLIP-style parameter (attention, Linear, everything else as is)."""
    if leaf == "in_proj_kernel":
        return (lambda w: w.T.reshape(shape), lambda k: k.reshape(shape[0], -1).T)
    if leaf == "in_proj_bias":
        return (lambda b: b.reshape(shape), lambda b: b.reshape(-1))
    if leaf == "out_proj_kernel":
        return (lambda w: w.T.reshape(shape), lambda k: k.reshape(-1, shape[-1]).T)
    if leaf == "kernel":
        return (lambda w: w.T, lambda k: k.T)
    return identity, identity


def to_numpy(tensor) -> np.ndarray:
    """A torch tensor (any dtype, bf16 included) or array as a float32/int numpy array."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(tensor)


def torch_layout_shape(rule: Rule, shape: tuple[int, ...]) -> tuple[int, ...] | str:
    """Our parameter's shape as the checkpoint would hold it: `shape` sent back through the same
    rule the import uses (a Linear kernel (in, out) -> weight (out, in), qkv (D, 3, heads, hd) ->
    (3D, D), ...), on a zero-strided array, so nothing the size of the tensor is allocated.
    A rule that cannot take it (none today) leaves our shape, marked as ours."""
    try:
        return tuple(np.shape(rule.to_torch(np.broadcast_to(np.float32(0), shape))))
    except Exception:  # noqa: BLE001 - only the message's wording depends on it
        return f"{shape} (in our layout)"


def import_state_dict(rules: list[Rule], state_dict: dict, target_shapes: dict[Path, tuple],
                      what: str) -> dict:
    """Apply rules strictly: every key consumed, every target filled with the right shape."""
    missing, mismatched, flat = [], [], {}
    rule_keys = {r.key for r in rules}
    for r in rules:
        if r.key not in state_dict:
            missing.append(r.key)
            continue
        tensor = to_numpy(state_dict[r.key])
        expected = tuple(target_shapes[r.path])
        try:
            value = r.to_ours(tensor)
        except ValueError:  # a reshape or transpose the wrong-sized tensor cannot take
            value = None
        if value is None or tuple(value.shape) != expected:
            mismatched.append((r.key, tuple(tensor.shape), torch_layout_shape(r, expected)))
            continue
        flat[r.path] = value.astype(np.float32, copy=False)  # no second copy of the model
    unexpected = sorted(k for k in state_dict if k not in rule_keys)
    unfilled = sorted("/".join(p) for p in target_shapes if p not in {r.path for r in rules})
    if missing or unexpected or mismatched or unfilled:
        raise ConversionError(what, missing + [f"(no rule for model parameter {p})"
                                               for p in unfilled], unexpected, mismatched)
    return unflatten(flat)


def export_state_dict(rules: list[Rule], params: dict) -> dict[str, np.ndarray]:
    """Our params -> {torch key: float32 numpy array in torch layout} (bf16 upcast)."""
    flat = flatten(params)
    paths = {r.path for r in rules}
    extra = sorted("/".join(p) for p in flat if p not in paths)
    missing = sorted("/".join(r.path) for r in rules if r.path not in flat)
    if extra or missing:
        raise ConversionError("export", missing, extra)
    # np.array(order='C'), not ascontiguousarray: that one turns a 0-d logit_scale into (1,).
    return {r.key: np.array(r.to_torch(np.asarray(flat[r.path], np.float32)), order="C")
            for r in rules}


def strip_prefixes(state_dict: dict, prefixes: tuple[str, ...]) -> dict:
    """Remove wrapper prefixes ('module.', 'model.', ...) when *every* key carries one."""
    for p in prefixes:
        if state_dict and all(k.startswith(p) for k in state_dict):
            state_dict = {k[len(p):]: v for k, v in state_dict.items()}
    return state_dict
