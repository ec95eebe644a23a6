"""Evaluation while training (config.evals) and the best checkpoint kept by one of its metrics.

config.evals:
  every_steps  > 0: the task's own evaluation (task.evaluate: classification top-1/top-5 over the
               multi-view protocol, retrieval R@1/5/10 and zero-shot for mm_pretrain) every that
               many steps, on config.eval.split, with the weights evaluation uses (the EMA when
               kept); results go to the log line, metrics.jsonl and TensorBoard.
  views        multi: the config.eval protocol (clips x crops), logged as eval_<metric>, the
               same names as the evaluation at the end of training, which then counts as the
               last periodic one; single: 1 clip x 1 crop (cheaper), logged as
               eval_single_<metric>, run at the end too.
  keep_best    '' or a logged metric: eval_top1 (larger is better) or min:eval_<metric>
               (smaller): WORKDIR/best holds the variables ({'params', ...model state}) of the
               step where it was best, WORKDIR/best.json says which step and value. The folder
               is what init_from, --mode=evaluate (as config.init_from) and `convert export`
               read.
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

VIEWS = ("multi", "single")


def prefix(config) -> str:
    """The name prefix of the periodic evaluation's metrics."""
    return "eval_" if config.evals.views == "multi" else "eval_single_"


def check(config, task) -> None:
    """Fail at start on an evals block that cannot work."""
    e = config.evals
    if e.views not in VIEWS:
        raise ValueError(f"evals.views={e.views!r}: choose one of {VIEWS}.")
    if e.every_steps < 0:
        raise ValueError(f"evals.every_steps={e.every_steps}: give 0 (off) or a step count.")
    if (e.every_steps or e.keep_best) and not task.implements("evaluate"):
        raise ValueError(f"task {config.task!r} has no evaluation: evals.every_steps and "
                         f"evals.keep_best must be unset.")
    if e.keep_best:
        if not e.every_steps:
            raise ValueError(f"evals.keep_best={e.keep_best!r} needs evaluations to compare: set "
                             f"evals.every_steps > 0.")
        metric = e.keep_best.removeprefix("min:")
        if not metric.startswith(prefix(config)):
            raise ValueError(f"evals.keep_best={e.keep_best!r}: with evals.views={e.views!r} "
                             f"the metrics are logged as {prefix(config)}<name>, e.g. "
                             f"{prefix(config)}top1.")


def eval_config(config):
    """The config the periodic evaluation runs with: config itself (views=multi) or a copy with
    one clip and one crop (views=single)."""
    if config.evals.views == "multi" or "num_clips" not in config.eval:
        return config
    copy = config.copy_and_resolve_references()
    with copy.unlocked():
        copy.eval.update(num_clips=1, num_crops=1)
    return copy


def due(config, done: int, total: int) -> bool:
    """Whether the periodic evaluation runs after step `done` (the one at the end of training is
    the final evaluation itself when views=multi)."""
    every = config.evals.every_steps
    if not every:
        return False
    if done >= total:
        return config.evals.views == "single"
    return done % every == 0


def scalars(result: dict, name_prefix: str) -> dict:
    """An evaluation's numbers, named for the log: {prefix + name: value}."""
    return {f"{name_prefix}{k}": v for k, v in result.items()
            if isinstance(v, (int, float, np.number))}


class BestCheckpoint:
    """WORKDIR/best: the variables of the step with the best `spec` metric so far (see the
    module docstring); survives a resume (best.json is read back)."""

    def __init__(self, workdir: str, spec: str):
        self.spec = spec
        self.smaller = spec.startswith("min:")
        self.metric = spec.removeprefix("min:")
        self.directory = os.path.join(os.path.abspath(workdir), "best")
        self.record_path = os.path.join(os.path.abspath(workdir), "best.json")
        self.best = None
        if os.path.isfile(self.record_path):
            with open(self.record_path) as f:
                self.best = json.load(f)

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best["value"] if self.smaller else value > self.best["value"]

    def offer(self, step: int, metrics: dict, variables: dict) -> bool:
        """Keep `variables` when metrics[self.metric] beats the best so far. Returns whether it
        did."""
        import orbax.checkpoint as ocp
        if self.metric not in metrics:
            raise ValueError(f"evals.keep_best={self.spec!r}: the evaluation logged no "
                             f"{self.metric} (it logged {sorted(metrics)}).")
        value = float(metrics[self.metric])
        if not self.better(value):
            return False
        staging = self.directory + ".tmp"
        if jax.process_index() == 0 and os.path.exists(staging):
            shutil.rmtree(staging)
        with ocp.StandardCheckpointer() as ckptr:  # every process writes its shards
            ckptr.save(staging, variables, force=True)
        if jax.process_index() == 0:  # the old best goes only once the new one is complete
            if os.path.exists(self.directory):
                shutil.rmtree(self.directory)
            os.rename(staging, self.directory)
            self.best = {"step": step, "metric": self.metric, "value": value}
            with open(self.record_path + ".tmp", "w") as f:
                json.dump(self.best, f, indent=1)
            os.replace(self.record_path + ".tmp", self.record_path)
        else:
            self.best = {"step": step, "metric": self.metric, "value": value}
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"best_{step}")
        return True
