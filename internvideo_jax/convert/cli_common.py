"""What the converter commands share, whatever the model family: reading --src's weights, saying
the size found, the model's abstract variables, the arrays' placement (--mesh) and the writing of
orbax params and torch files. The family modules (videomae.py, uniformerv2.py, multimodal.py,
cma.py) and the CLI (__main__.py) import from here; nothing here imports a family or the CLI."""
from __future__ import annotations

import os

import numpy as np

from internvideo_jax.convert.common import UsageError, flatten, unflatten
from internvideo_jax.convert.outputs import replacing
from internvideo_jax.convert.reading import choose_weights, read_torch_file, strip_wrappers
from internvideo_jax.infra import sharding
from internvideo_jax.infra.sharding import MESH_AXES


def read_weights(a) -> dict:
    """--src's state dict: the entry --weights names (or the first of reading.WEIGHT_ENTRIES),
    said on stdout with what else the file holds; `module.` / `_orig_mod.` wrappers stripped."""
    state_dict, report = choose_weights(read_torch_file(a.src, a.trust_checkpoint), a.weights)
    print(report)
    return strip_wrappers(state_dict)


def say_size(family: str, name: str | None, what: str, given: str) -> None:
    print(f"{family}: {what}" + (f" = size {name}" if name else " (no named size: stored in "
                                 "model.json; fine-tune it with --config.model.size=init_from)")
          + ("" if given else ", read off the tensors"))


def known_size(get, name: str, known=None):
    """get(name), an unknown size reported as a UsageError (the models raise ValueError or
    KeyError, naming the known ones)."""
    try:
        return get(name)
    except (KeyError, ValueError) as e:
        raise UsageError(f"--size {name!r}: known sizes {known}" if known else
                         f"--size: {e.args[0] if e.args else e}") from None


def abstract_variables(model, *args) -> dict:
    """model.init's variables as ShapeDtypeStructs, boxed with their logical axis names: unboxed,
    the target of the strict import; boxed, the shardings when --mesh asks for them."""
    import jax
    return jax.eval_shape(model.init, jax.random.key(0), *args)


def as_jax_arrays(params: dict, shardings: dict | None = None) -> dict:
    """numpy leaves (views into the source tensors) -> jax arrays, one at a time: each source
    tensor is freed once its last view is converted, so the host holds ~1x the model throughout.
    (Saving numpy leaves would make orbax copy every array twice.) With `shardings` (a tree like
    params of NamedShardings) each array is placed sharded over its mesh."""
    import jax
    import jax.numpy as jnp
    flat = flatten(params)
    del params
    placement = flatten(shardings) if shardings is not None else {}
    for key in list(flat):
        flat[key] = (jax.device_put(flat[key], placement[key]) if key in placement
                     else jnp.asarray(flat[key]))
    return unflatten(flat)


def parse_mesh(text: str) -> dict:
    """'fsdp=8' or 'data=2,fsdp=-1,tensor=2' -> a mesh config (unnamed axes are 1)."""
    config = {axis: 1 for axis in MESH_AXES}
    for part in text.split(","):
        axis, _, size = part.partition("=")
        if axis.strip() not in config or not size.strip().lstrip("-").isdigit():
            raise UsageError(f"--mesh {text!r}: expected comma-separated axis=size with axes "
                             f"{MESH_AXES}, e.g. fsdp=8 or data=2,fsdp=-1")
        config[axis.strip()] = int(size)
    return config


def import_shardings(mesh_text: str, boxed: dict, imported: dict) -> dict:
    """NamedShardings from the one rules table for the imported variables (their model's boxed
    abstract variables), over a mesh of this process's devices (all processes' devices under
    jax.distributed)."""
    mesh = sharding.make_mesh(parse_mesh(mesh_text))
    shardings = sharding.logical_shardings(boxed, mesh)
    return {collection: shardings[collection] for collection in imported}


def save_params(params: dict, out: str) -> None:
    """An orbax params checkpoint, written with at most 1 GB of arrays in flight."""
    import orbax.checkpoint as ocp
    handler = ocp.StandardCheckpointHandler(save_concurrent_gb=1)
    with ocp.Checkpointer(handler) as ckptr:
        ckptr.save(os.path.abspath(out), args=ocp.args.StandardSave(params), force=True)


def save_torch(sd: dict, out: str, overwrite: bool) -> None:
    """torch.save(sd) to out, replacing it only once the file is complete."""
    import torch
    with replacing(out, overwrite) as staging:
        torch.save(sd, staging)


def save_state_dict(arrays: dict, entry: str, out: str, overwrite: bool) -> int:
    """An exported state dict ({key: numpy array in torch layout}) saved as {entry: tensors},
    the wrapper the family's own loaders expect ('model', 'model_state', 'state_dict').
    Returns the number of tensors."""
    import torch
    save_torch({entry: {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}}, out,
               overwrite)
    return len(arrays)
