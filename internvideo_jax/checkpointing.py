"""Orbax checkpoints holding the train state, the grain iterator state and run metadata together.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. Saves are asynchronous (training goes on
while the arrays are written); orbax commits a step atomically, so a run killed mid-save leaves the
previous step as the latest complete one. Restoring builds the target from abstract arrays with the
*current* mesh's shardings, so a checkpoint restores onto another device count or strategy.
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(meta)), force=True)

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None) -> Any:
        """Restore `step` onto the shardings of `abstract_state` (jax.ShapeDtypeStruct leaves).

        data_iter, if given, is restored in place from the saved grain state (which needs the same
        worker count); pass None when the pipeline was rebuilt at its position instead.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStruct leaves carrying the given shardings: a restore target with no memory."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def load_params(path: str, scanned: bool | None = None) -> tuple[dict, dict]:
    """Parameters (as numpy, on the host) and the run's config.json, from a workdir (its latest
    checkpoint), a checkpoint step directory, or a params-only checkpoint (convert import).
    scanned: the layer layout wanted (True: stacked 'blocks', False: blocks_i; None: as stored)."""
    variables, meta = load_variables(path, scanned=scanned)
    return variables["params"], meta


def load_variables(path: str, ema: bool = False,
                   scanned: bool | None = None) -> tuple[dict, dict]:
    """{'params', ...model state (e.g. 'batch_stats')} as numpy, and the run's config.json, from
    the same places as load_params. ema=True takes the EMA weights of a train state that has them.
    A variables checkpoint (convert import: {'params', 'batch_stats'}) is returned as it is.
    scanned: convert the layer layout when it differs (models/layers.stack_layers)."""
    import numpy as np
    meta = {}
    if os.path.isdir(os.path.join(path, "checkpoints")):
        if os.path.exists(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                meta = json.load(f)
        steps = sorted(int(s) for s in os.listdir(os.path.join(path, "checkpoints"))
                       if s.isdigit())
        if not steps:
            raise FileNotFoundError(f"{path}/checkpoints holds no finished checkpoint")
        path = os.path.join(path, "checkpoints", str(steps[-1]))
    if os.path.isdir(os.path.join(path, "state")):
        path = os.path.join(path, "state")
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(os.path.abspath(path))
    if "params" in tree and "opt_state" in tree:  # a train state
        params = tree["ema_params"] if ema and tree.get("ema_params") is not None \
            else tree["params"]
        tree = {"params": params, **(tree.get("model_state") or {})}
    elif "params" not in tree:  # a params-only checkpoint
        tree = {"params": tree}
    tree = jax.tree.map(np.asarray, tree)
    if scanned is not None:
        from internvideo_jax.models.layers import match_layout
        tree = match_layout(tree, scanned)
    return tree, meta
