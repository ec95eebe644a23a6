"""The converter families: which `--model` names each imports, how it recognises one of our
parameter trees for `export`, and the `--to` formats it writes.

Each family module (videomae.py, uniformerv2.py, multimodal.py, cma.py) ends with its
`register(Family(...))` call; MODULES names them, in the order the CLI lists them. Adding a model
family is its own module (the conversion, its import and export functions, its registration) and
its name in MODULES.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from internvideo_jax.convert.common import UsageError

# the family modules, imported (and so registered) by families(); their order is --model's
MODULES = ("videomae", "uniformerv2", "multimodal", "cma")


@dataclasses.dataclass(frozen=True)
class Family:
    """One converter family.

    label: its name in messages and help ('VideoMAE').
    models: the --model names it imports (empty: export only).
    import_fn(a) -> (our tree: params, or {'params', 'batch_stats'}; the model's boxed abstract
        variables; its description, models/architecture.py) for the parsed `import` arguments.
    exports(params) -> whether one of our (unscanned) parameter trees is this family's.
    export_fn(variables, meta, a) writes --out for the parsed `export` arguments (variables and
        meta as checkpointing.load_variables gives them).
    formats: the --to formats export_fn writes; format_error, the UsageError for another one.
    sizes: the named sizes --size accepts, for the help ('' if none)."""
    label: str
    models: tuple[str, ...]
    import_fn: Callable | None
    exports: Callable[[dict], bool]
    export_fn: Callable
    formats: tuple[str, ...] = ("pth",)
    format_error: str = ""
    sizes: str = ""


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (its label unique, its --model names not another family's)."""
    taken = {m: f.label for f in _FAMILIES.values() for m in f.models if f.label != family.label}
    clash = [m for m in family.models if m in taken]
    if clash:
        raise ValueError(f"converter family {family.label}: --model {clash} already registered "
                         f"by {[taken[m] for m in clash]}")
    if family.models and family.import_fn is None:
        raise ValueError(f"converter family {family.label}: --model names without an import_fn")
    _FAMILIES[family.label] = family
    return family


def families() -> list[Family]:
    """Every registered family: MODULES' in that order (whichever was imported first), then any
    other in the order registered."""
    for name in MODULES:
        importlib.import_module(f"internvideo_jax.convert.{name}")
    order = {f"internvideo_jax.convert.{name}": i for i, name in enumerate(MODULES)}
    return sorted(_FAMILIES.values(),
                  key=lambda f: order.get(getattr(f.export_fn, "__module__", ""), len(order)))


def model_names() -> list[str]:
    """The --model choices."""
    return [m for f in families() for m in f.models]


def export_formats() -> list[str]:
    """The --to choices."""
    return sorted({fmt for f in families() for fmt in f.formats})


def sizes_help() -> str:
    """'tiny, S, ... (VideoMAE); tiny, B/16, ... (UniFormerV2, multimodal)': families with the
    same named sizes share one entry."""
    groups: dict[str, list[str]] = {}
    for f in families():
        if f.sizes:
            groups.setdefault(f.sizes, []).append(f.label)
    return "; ".join(f"{sizes} ({', '.join(labels)})" for sizes, labels in groups.items())


def for_model(name: str) -> Family:
    """The family that imports --model `name`."""
    for f in families():
        if name in f.models:
            return f
    raise UsageError(f"unknown --model {name!r}")


def for_export(params: dict) -> Family:
    """The family whose parameter tree `params` is (the first that recognises it)."""
    every = families()
    for f in every:
        if f.exports(params):
            return f
    raise UsageError(f"--src holds a parameter tree no converter family recognises (top-level "
                     f"{sorted(params)}); known families: {', '.join(f.label for f in every)}")
