"""The layer layout of parameter trees: per-layer (`blocks_0`, `blocks_1`, ...) <-> scanned
(`blocks/block/...`, a leading (depth,) 'layers' axis on every leaf).

Plain nested dicts of arrays in, NumPy out: the checkpoint restore (training/checkpointing.py),
the trainer and the offline tools use it to load weights saved in the other layout, and the tests
to compare the two. The naming rule it follows is models/naming.py; the scanned modules
themselves are models/layers.py (scan_blocks, Transformer).
"""
from __future__ import annotations

import jax
import numpy as np

from internvideo_jax.models import naming
from internvideo_jax.models.naming import STACKS


def stack_layers(tree: dict) -> dict:
    """Unscanned layout -> scanned: every dict holding {name}_0..{name}_{n-1} (name in STACKS)
    gets them stacked leaf by leaf into one '{name}/block' subtree with a leading (n,) axis."""
    if not isinstance(tree, dict):
        return tree
    out = {k: stack_layers(v) for k, v in tree.items() if _layer_key(k) is None}
    for name in STACKS:
        n = sum(_layer_key(k) == name for k in tree)
        if not n:
            continue
        if any(naming.layer_name(name, i) not in tree for i in range(n)):
            raise ValueError(f"{name} are not numbered 0..{n - 1}: {sorted(tree)}")
        layers = [tree[naming.layer_name(name, i)] for i in range(n)]
        out[name] = {naming.SCAN_BLOCK: jax.tree.map(
            lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)}
    return out


def unstack_layers(tree: dict) -> dict:
    """Scanned layout -> unscanned: every '{name}/block' subtree (name in STACKS) with a leading
    (n,) axis becomes {name}_0..{name}_{n-1}."""
    if not isinstance(tree, dict):
        return tree
    out = {k: unstack_layers(v) for k, v in tree.items() if not naming.is_stack(k, v)}
    for name, value in tree.items():
        if naming.is_stack(name, value):
            stacked = value[naming.SCAN_BLOCK]
            n = jax.tree.leaves(stacked)[0].shape[0]
            for i in range(n):
                out[naming.layer_name(name, i)] = jax.tree.map(lambda x: np.asarray(x)[i],
                                                               stacked)
    return out


def match_layout(tree: dict, scanned: bool) -> dict:
    """`tree` in the scanned (True) or unscanned (False) layer layout, converted if needed."""
    if scanned and not is_scanned(tree):
        return stack_layers(tree)
    if not scanned and is_scanned(tree):
        return unstack_layers(tree)
    return tree


def is_scanned(tree: dict) -> bool:
    """Whether a parameter tree holds scanned layers anywhere."""
    return isinstance(tree, dict) and any(naming.is_stack(k, v) or is_scanned(v)
                                          for k, v in tree.items())


def _layer_key(key: str) -> str | None:
    """'blocks' for 'blocks_3' (any name in STACKS), else None. A zero-padded index
    ('blocks_01', not a name the models give) is refused rather than passed through."""
    parsed = naming.parse_layer(key)
    if parsed is None:
        name, _, index = key.rpartition("_")
        if name in STACKS and index.isascii() and index.isdigit():
            raise ValueError(f"{key!r} is not a layer name of the {name!r} stack "
                             f"(layers are {naming.layer_name(name, 0)}, "
                             f"{naming.layer_name(name, 1)}, ...)")
        return None
    return parsed[0]
