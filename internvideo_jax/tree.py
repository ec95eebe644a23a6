"""Nested-dict <-> path-dict conversion for parameter trees (plain dicts, no jax / flax).

flatten({'a': {'b': x}}) == {('a', 'b'): x}; unflatten is its inverse. Used by the converters,
the tasks (pretrained weights into a model's tree), the trainer and the offline tools.
"""
from __future__ import annotations

from typing import Any

Path = tuple[str, ...]  # the keys from the root to one leaf


def flatten(tree: dict, prefix: Path = ()) -> dict[Path, Any]:
    """{path: leaf} for every leaf of a nested dict (anything that is not a dict is a leaf)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(flat: dict[Path, Any]) -> dict:
    """The nested dict of {path: leaf} (the inverse of flatten)."""
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree
