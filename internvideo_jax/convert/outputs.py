"""Where the converter writes: never into a training run, never over anything without --overwrite.

`check_output` runs before any weight is read, so a refusal costs nothing; `replacing` writes to
a staging sibling and swaps it in only once the write is complete, so a conversion that fails
leaves the previous target as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil

from internvideo_jax.convert.common import OutputRefused


def _holds(path: str) -> list[str]:
    """What marks `path` as a training workdir (empty: it is not one)."""
    marks = []
    checkpoints = os.path.join(path, "checkpoints")
    if os.path.isdir(checkpoints) and any(name.split(".")[0].isdigit()
                                          for name in os.listdir(checkpoints)):
        marks.append("checkpoints/")
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
        marks.append("metrics.jsonl")
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        try:
            with open(config) as f:
                if "derived" in json.load(f):
                    marks.append("config.json of a run")
        except (OSError, ValueError, TypeError):  # unreadable, not JSON, or not an object
            pass
    return marks


def is_training_workdir(path: str) -> bool:
    """A directory a training run writes: it holds checkpoints/ (with orbax step directories,
    checkpoints/<step>: a project's own checkpoints/ folder of downloaded .pth files does not
    make it a run), metrics.jsonl, or a config.json with the run's "derived" values (train.py
    writes all three). The converter never writes into one, nor replaces one, --overwrite or
    not."""
    return os.path.isdir(path) and bool(_holds(path))


def _refuse_workdir(out: str, workdir: str, how: str) -> None:
    raise OutputRefused(
        f"--out {out} {how} the training workdir {workdir} (it holds "
        f"{', '.join(_holds(workdir))}): convert never writes into a training workdir, even "
        f"with --overwrite; choose another --out")


def _describe(path: str) -> str:
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        return f"a directory with {len(entries)} entries ({shown})"
    return f"a file of {os.path.getsize(path):,} bytes"


def _is_empty(path: str) -> bool:
    if os.path.isdir(path) and not os.path.islink(path):
        return not os.listdir(path)
    return os.path.isfile(path) and os.path.getsize(path) == 0


def check_output(out: str, overwrite: bool) -> None:
    """Refuse (OutputRefused, one line) a target that is, is inside, or holds a training workdir
    (always), or that exists and is not empty (unless `overwrite`)."""
    real = os.path.realpath(out)
    node = real
    while True:
        if is_training_workdir(node):
            _refuse_workdir(out, node, "is" if node == real else "is inside")
        parent = os.path.dirname(node)
        if parent == node:
            break
        node = parent
    if not os.path.lexists(out) or _is_empty(out):
        return
    if not overwrite:
        raise OutputRefused(f"--out {out} already exists and is {_describe(out)}: pass "
                            f"--overwrite to replace it, or choose another --out")
    if os.path.isdir(out) and not os.path.islink(out):  # replacing removes all: no run under it
        for root, dirs, _ in os.walk(out):
            for d in dirs:
                if is_training_workdir(os.path.join(root, d)):
                    _refuse_workdir(out, os.path.join(root, d), "holds")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def replacing(out: str, overwrite: bool):
    """Yield a staging path next to `out` to write the new file or directory to; on success it
    replaces `out` (checked again first: a run may have started there meanwhile), on failure it
    is removed and `out` is left as it was."""
    check_output(out, overwrite)
    out = out.rstrip(os.sep) or out
    staging = os.path.join(os.path.dirname(os.path.abspath(out)),
                           f".{os.path.basename(out)}.convert-partial")
    _remove(staging)  # a leftover of an interrupted conversion
    parent = os.path.dirname(staging)
    os.makedirs(parent, exist_ok=True)
    try:
        yield staging
        check_output(out, overwrite)
        _remove(out)
        os.replace(staging, out)
    finally:
        _remove(staging)
