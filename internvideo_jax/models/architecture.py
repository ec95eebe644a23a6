"""A model's architecture, stored with its weights as JSON, so that a task can rebuild exactly the
model an imported checkpoint holds (e.g. UniFormerV2-B/16 with 8 global UniBlocks on layers 4-11,
which no named size is) with `model.size=init_from`.

`convert import` writes OUT/model.json; a training run writes the same description into its
config.json ('architecture'). The description:
  {"family": "uniformerv2_classifier", "size": {...the size dataclass's fields...},
   "name": "B/16" or null (the named size it equals), "num_classes": 174,
   + the family's structural switches (UniFormerV2: temporal_kernel, temporal_stride, local,
   frozen)}
"""
from __future__ import annotations

import dataclasses
import json
import os

FILE = "model.json"
FAMILIES = ("videomae_pretrain", "videomae_classifier", "videomae_detector", "umt_student",
            "uniformerv2_classifier", "internvideo_multimodal", "internvideo_qa")


# families whose encoder is a VideoMAEEncoder of a VideoMAESize (one loads into another)
VIDEOMAE_ENCODERS = {"videomae_pretrain", "videomae_classifier", "umt_student"}


def name_of(size, named: dict) -> str | None:
    """The name of the size equal to `size` (a frozen dataclass) in `named`, or None."""
    return next((n for n, s in named.items() if s == size), None)


def describe(family: str, size, name: str | None, **fields) -> dict:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {FAMILIES}")
    return {"family": family, "name": name, "size": dataclasses.asdict(size), **fields}


def write(directory: str, description: dict) -> None:
    with open(os.path.join(directory, FILE), "w") as f:
        json.dump(description, f, indent=1)


def find(path: str) -> dict | None:
    """The description stored with the weights at `path` (an imported params directory, a
    training workdir, or one of its checkpoint step directories), or None."""
    directory = os.path.abspath(path)
    for up in range(4):  # OUT itself, or a workdir above checkpoints/<step>/state
        directory = os.path.dirname(directory) if up else directory
        if os.path.isfile(os.path.join(directory, FILE)):
            with open(os.path.join(directory, FILE)) as f:
                return json.load(f)
        config = os.path.join(directory, "config.json")
        if os.path.isfile(config) and os.path.isdir(os.path.join(directory, "checkpoints")):
            with open(config) as f:
                return json.load(f).get("architecture")
    return None


def load(path: str, family: str) -> dict:
    """find(path), refused loudly when absent or of another family."""
    if not path:
        raise ValueError("model.size=init_from takes the architecture stored with "
                         "config.init_from, which is not set.")
    description = find(path)
    if description is None:
        raise ValueError(f"model.size=init_from: {path} has no {FILE} (written by `convert "
                         f"import`) nor a run's config.json with an architecture: name a size "
                         f"instead, or re-import the checkpoint.")
    if description["family"] != family and not (  # VideoMAE encoders, whatever trained them
            {description["family"], family} <= VIDEOMAE_ENCODERS):
        raise ValueError(f"model.size=init_from: {path} holds a {description['family']}, not a "
                         f"{family}.")
    return description


def size_of(description: dict, size_class):
    """The description's size as `size_class` (tuples restored from JSON lists)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in description["size"].items()}
    return size_class(**fields)


def configured_size(config, family: str, get_size, size_class):
    """config.model.size as a size: a named one (get_size), or with `init_from` the one stored
    with config.init_from."""
    if config.model.size == "init_from":
        return size_of(load(config.init_from, family), size_class)
    return get_size(config.model.size)
