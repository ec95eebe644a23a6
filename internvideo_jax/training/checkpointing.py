"""Orbax checkpoints holding the train state, the grain iterator state and run metadata together.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. Saves are asynchronous (training goes on
while the arrays are written); orbax commits a step atomically, so a run killed mid-save leaves the
previous step as the latest complete one. Restoring builds the target from abstract arrays with the
*current* mesh's shardings, so a checkpoint restores onto another device count or strategy.
"""
from __future__ import annotations

import errno
import json
import os
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from internvideo_jax.models.layout import match_layout


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("state", "data", "meta"))
        self._saving: int | None = None  # the step of the latest save
        self._unchecked = False  # whether its outcome is still to be checked

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Saved steps, newest first (what orbax lists; a damaged one is found on restoring)."""
        self.manager.reload()
        return sorted(self.manager.all_steps(), reverse=True)

    def set_aside(self, step: int) -> str:
        """Rename a damaged step folder to <step>.damaged (orbax then ignores it and a new save
        of that step can be written); nothing is deleted. Returns the new path."""
        src = os.path.join(self.directory, str(step))
        dst = src + ".damaged"
        n = 1
        while os.path.exists(dst):
            n += 1
            dst = f"{src}.damaged{n}"
        if jax.process_index() == 0:  # every host sees the same workdir: one renames it
            os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set_aside_{step}")
        self.manager.reload()
        return dst

    def check_saves(self, current_step: int) -> None:
        """Raise SaveFailed (one line: which checkpoint, which path, the OS error, which one is
        intact) if a background save has failed; called after every step."""
        if not self._unchecked or self.manager.is_saving_in_progress():
            return
        self._unchecked = False
        try:  # the save is over: returns at once, or raises what its background thread raised
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001 - orbax re-raises the writer's error as it was
            raise SaveFailed(self._save_failure(self._saving, e, current_step)) from e

    def _save_failure(self, step: int, error: BaseException,
                      current_step: int | None = None) -> str:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            if isinstance(cause, OSError):
                break
            cause = cause.__cause__ or cause.__context__
        code = re.search(r"os_error_code='?(\d+)", str(error))  # TensorStore's wording
        if isinstance(cause, OSError) and cause.errno:
            why = f"{errno.errorcode.get(cause.errno, 'OSError')}: {os.strerror(cause.errno)}"
        elif code:
            n = int(code.group(1))
            why = f"{errno.errorcode.get(n, 'OSError')}: {os.strerror(n)}"
        else:
            first = str(error).strip().splitlines()
            why = f"{type(error).__name__}: {first[0][:200] if first else ''}"
        intact = [s for s in self.steps() if s < step]
        return (f"saving the checkpoint of step {step} to {self.directory} failed ({why}); "
                f"training stopped at step {step if current_step is None else current_step}. "
                + (f"The previous checkpoint, step {intact[0]}, is intact: fix the cause (e.g. "
                   f"free disk space) and run the same command to resume from it."
                   if intact else "No earlier checkpoint exists: fix the cause and start again."))

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
        """Save asynchronously; the metadata gets the state's fingerprint (see fingerprint)."""
        previous, self._saving = self._saving, step
        meta = {**meta, "fingerprint": fingerprint(state)}
        try:
            self._save(step, state, data_iter, meta)
        except Exception as e:  # noqa: BLE001 - this save's folder, or the previous save's error
            raise SaveFailed(self._save_failure(previous if self._unchecked else step, e,
                                                step)) from e
        self._unchecked = True

    def _save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
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
        """Wait for the last save; SaveFailed if it (or an earlier one) failed."""
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            if self._saving is None:
                raise
            raise SaveFailed(self._save_failure(self._saving, e)) from e
        finally:
            self.manager.close()


def _bit_sum(x):
    """The sum of an array's raw bits as uint32 (wrapping), or None for non-numeric leaves."""
    import jax.numpy as jnp
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        return None  # e.g. typed PRNG keys
    size = x.dtype.itemsize
    if x.dtype != jnp.bool_ and size in (1, 2, 4, 8):
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
        x = jax.lax.bitcast_convert_type(x, unsigned)  # 8-byte values: (..., 2) words
    return jnp.sum(x.astype(jnp.uint32), dtype=jnp.uint32)


_bit_sums = jax.jit(lambda leaves: [_bit_sum(x) for x in leaves])  # compiled once per structure


def fingerprint(tree: Any) -> dict[str, int]:
    """{leaf path: the sum of the leaf's raw bits as uint32, mod 2**32} of a pytree of arrays.

    Integer addition does not depend on order, so the value is the same on any mesh and device
    count: a restored array equals the saved one exactly when its fingerprint does (up to a 2**-32
    chance). Storage can corrupt a checkpoint without any error on reading it back (a zeroed block
    in an OCDBT data file restored as NaNs, tested): the fingerprint saved with the metadata
    catches it.
    """
    import numpy as np
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = _bit_sums([x for _, x in leaves])
    return {jax.tree_util.keystr(path): int(np.asarray(v)) for (path, _), v in zip(leaves, sums)
            if v is not None}


def check_fingerprint(tree: Any, meta: dict, where: str) -> None:
    """Raise CheckpointDamaged if the restored tree differs from the fingerprint in `meta` (a
    checkpoint saved before fingerprints were kept has none: nothing to check)."""
    saved = meta.get("fingerprint")
    if not saved:
        return
    got = fingerprint(tree)
    wrong = sorted(k for k in saved if got.get(k) != saved[k])
    if wrong:
        raise CheckpointDamaged(f"{where}: {len(wrong)} restored arrays differ from the "
                                f"fingerprint saved with them (e.g. {wrong[:3]}): the files were "
                                f"corrupted after writing")


class CheckpointDamaged(RuntimeError):
    """A checkpoint restored, but not to what was saved."""


class SaveFailed(RuntimeError):
    """A checkpoint could not be written; the message is one line that says what to do."""


class NoIntactCheckpoint(RuntimeError):
    """Every saved step of a run is damaged (or resume_strict refused a damaged newest one)."""


def damage_reason(error: BaseException) -> str:
    """One line on why a checkpoint did not restore (the first line of orbax/TensorStore's
    message, which can run to pages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStruct leaves carrying the given shardings: a restore target with no memory."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def resolve_state(path: str) -> tuple[str, dict]:
    """(the absolute path of the state directory that `path` names, the run's config.json or {}):
    a workdir (its newest finished checkpoint), a checkpoint step directory or an imported
    params checkpoint."""
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
    return os.path.abspath(path), meta


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
    scanned: convert the layer layout when it differs (models/layout.match_layout)."""
    import numpy as np
    path, meta = resolve_state(path)
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(path)
    if "params" in tree and "opt_state" in tree:  # a train state
        params = tree["ema_params"] if ema and tree.get("ema_params") is not None \
            else tree["params"]
        tree = {"params": params, **(tree.get("model_state") or {})}
    elif "params" not in tree:  # a params-only checkpoint
        tree = {"params": tree}
    tree = jax.tree.map(np.asarray, tree)
    if scanned is not None:
        tree = match_layout(tree, scanned)
    return tree, meta
