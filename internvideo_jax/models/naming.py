"""The layer naming rule: parameter names that other code relies on (a contract, not a style).

Per-layer modules of a transformer stack are named `{stack}_{i}` (i = 0, 1, ..., no leading
zeros), `stack` one of STACKS:

  'blocks'     VideoMAE / VideoMAE V2 / InternVideo-MAE (layers.Transformer: the encoder's
               `encoder/transformer/blocks_i`, the pretraining decoder's `decoder/.../blocks_i`)
  'resblocks'  CLIP (clip.py, text encoder `resblocks_i`) and UniFormerV2 (uniformerv2.py, the
               CLIP backbone's `resblocks_i`)

Scanned layouts (nn.scan, layers.scan_blocks) hold the same stack as one subtree
`{stack}/block/...` (SCAN_BLOCK = 'block') whose every leaf has a leading (depth,) 'layers' axis;
slice i of it is layer `{stack}_i` of the per-layer layout (layout.stack_layers / unstack_layers
convert between the two).

Who relies on it: models/layout.py (stack_layers, unstack_layers, match_layout, is_scanned),
optim.py (layer-wise lr decay: the encoder's `blocks` layers give the layer ids), and the
checkpoint converters' name regexes (convert/videomae.py, convert/uniformerv2.py). Renaming a
stack, or adding one, means updating all of them.

Dependency-free on purpose (no jax / flax): plain strings and tuples.
"""
from __future__ import annotations

BLOCKS = "blocks"  # VideoMAE's layers.Transformer
RESBLOCKS = "resblocks"  # CLIP's and UniFormerV2's
SCANNED = BLOCKS  # the stack a scanned layers.Transformer is stored under (its historic name)
STACKS = (BLOCKS, RESBLOCKS)  # every name a model stacks layers under
SCAN_BLOCK = "block"  # the scanned layer's module name inside `{stack}/`


def layer_name(stack: str, i: int) -> str:
    """The per-layer module name of layer `i` of `stack`: layer_name('blocks', 3) == 'blocks_3'."""
    if stack not in STACKS:
        raise ValueError(f"Unknown layer stack {stack!r}; the stacks are {STACKS}.")
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"Layer index must be an int >= 0, got {i!r}.")
    return f"{stack}_{i}"


def parse_layer(name: str) -> tuple[str, int] | None:
    """(stack, index) for a per-layer module name ('resblocks_11' -> ('resblocks', 11)), None
    for any other name (other prefixes, non-decimal or zero-padded indices: 'blocks_01')."""
    if not isinstance(name, str):
        return None
    stack, sep, index = name.rpartition("_")
    if not sep or stack not in STACKS or not (index.isascii() and index.isdigit()):
        return None
    if index != str(int(index)):  # zero-padded: not a name layer_name produces
        return None
    return stack, int(index)


def is_layer_name(name: str, stack: str | None = None) -> bool:
    """Whether `name` is a per-layer module name (of `stack`, when given)."""
    parsed = parse_layer(name)
    return parsed is not None and (stack is None or parsed[0] == stack)


def stacked_stack(path: tuple[str, ...]) -> str | None:
    """The stack whose scanned subtree `{stack}/block` holds the parameter at `path` (names),
    None when the path is not in a scanned layout."""
    for a, b in zip(path, path[1:]):
        if a in STACKS and b == SCAN_BLOCK:
            return a
    return None


def is_stacked_path(path: tuple[str, ...]) -> bool:
    """Whether the parameter at `path` (names) belongs to scanned layers (a leading depth axis)."""
    return stacked_stack(path) is not None


def is_stack(key: str, value) -> bool:
    """Whether `key: value` of a parameter dict is a scanned stack (`{stack}: {'block': ...}`)."""
    return key in STACKS and isinstance(value, dict) and SCAN_BLOCK in value
