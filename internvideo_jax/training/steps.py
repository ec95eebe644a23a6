"""The train step and everything it is built from, assembled in one place (`build_step`): the
optimizer (schedule, layer decay, frozen parameters), the sharded state, the batch shardings and
the jitted step. Training (train.py), the fit planner (plan.py) and the benchmarks all call
build_step, so what is planned and measured is exactly what trains.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from internvideo_jax.infra import sharding
from internvideo_jax.training import checkpointing, optim


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer steps taken
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)  # e.g. {'batch_stats': ...}
    ema_params: Any = None  # the exponential moving average of params (optim.ema_decay > 0)

    def eval_variables(self) -> dict:
        """What evaluation runs: the EMA weights when kept, with the model state."""
        params = self.params if self.ema_params is None else self.ema_params
        return {"params": params, **self.model_state}


def make_optimizer(config, d: dict, params: Any = None, trainable: Any = None,
                   lr_scales: Any = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the schedule; with optim.layer_decay < 1 (fine-tuning) the updates are scaled
    per parameter by the reference's layer-wise rule (`params`: the tree, abstract is enough).
    trainable: a tree of bools (the task's `trainable_mask`); frozen parameters get a zero update
    and no optimizer state (optax.multi_transform keeps Adam's moments for the trainable only).
    lr_scales: a tree of per-parameter lr multipliers (the task's `lr_scales`, e.g. a new head's
    10x), applied like the layer decay, to the whole update."""
    o = config.optim
    schedule = optim.warmup_cosine(d["peak_lr"], d["min_lr"], d["warmup_steps"], d["total_steps"])
    tx = optim.adamw(schedule, o.b1, o.b2, o.eps, o.weight_decay, o.grad_clip or None)
    decay = o.layer_decay
    if decay < 1.0:
        tx = optax.chain(tx, optim.scale_updates(optim.layer_decay_scales(params, decay)))
    if lr_scales is not None:
        tx = optax.chain(tx, optim.scale_updates(lr_scales))
    if trainable is not None:
        labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    return tx, schedule


def create_state(task, tx, mesh, rng: jax.Array, init: bool = True,
                 ema: bool = False) -> tuple[Any, Any]:
    """The train state created already sharded (no full host copy): eval_shape, then jit(init).

    init=False returns the abstract state (ShapeDtypeStructs carrying the shardings) instead: the
    restore target when a checkpoint exists, so a resumed run never initialises parameters.
    ema: keep an exponential moving average of the parameters (TrainState.ema_params).
    Returns (state, shardings).
    """
    init_batch = task.init_batch(sharding.data_parallel_size(mesh))

    def init_fn(rng):
        variables = dict(task.init_variables(rng, init_batch))  # logically boxed
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          model_state=variables, ema_params=params if ema else None)

    def unboxed_init_fn(rng):
        return nn.meta.unbox(init_fn(rng))

    shardings = sharding.logical_shardings(jax.eval_shape(init_fn, rng), mesh)
    if not init:
        abstract = jax.eval_shape(unboxed_init_fn, rng)
        return checkpointing.abstract_like(abstract, shardings), shardings
    return jax.jit(unboxed_init_fn, out_shardings=shardings)(rng), shardings


def micro_batches(batch: dict, accum_steps: int) -> dict:
    """(B, ...) -> (accum_steps, B / accum_steps, ...), micro-batch i = rows i, i + k, i + 2k, ...

    Strided, not contiguous: a batch sharded over devices in contiguous blocks gives every device
    an equal share of every micro-batch, so each micro-step uses all devices.
    """
    def split(x):
        b = x.shape[0]
        x = x.reshape((b // accum_steps, accum_steps) + x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "act_batch") + (None,) * (x.ndim - 2))
    return jax.tree.map(split, batch)


def make_train_step(task, tx, schedule, base_rng: jax.Array, accum_steps: int = 1,
                    ema_decay: float = 0.0, trainable: Any = None):
    """The jittable step. accum_steps > 1: the batch is cut into that many micro-batches
    (`micro_batches`) whose gradients and metrics are averaged in a lax.scan before one optimizer
    update: the same update as the whole batch for losses that are means over equal-sized
    examples (VideoMAE, classification), at 1/accum_steps of the activation memory. For the
    contrastive loss each micro-batch's negatives are its own examples only.

    Tasks with a mutable model state (`task.mutable`, e.g. BatchNorm statistics) take and return
    it: loss_fn(params, batch, rng, train, model_state) -> (loss, (metrics, model_state)); with
    micro-batches the state is threaded through them in order. ema_decay > 0 updates
    state.ema_params; `trainable` (bools) keeps frozen parameters bit-identical."""
    stateful = bool(task.mutable)

    def loss_with_state(params, model_state, batch, rng):
        if stateful:
            return task.loss_fn(params, batch, rng, True, model_state)
        loss, metrics = task.loss_fn(params, batch, rng, True)
        return loss, (metrics, model_state)

    grad_fn = jax.value_and_grad(loss_with_state, has_aux=True)

    def grads_and_metrics(params, model_state, batch, rng):
        (_, (metrics, model_state)), grads = grad_fn(params, model_state, batch, rng)
        if trainable is not None:
            # Frozen parameters' gradients are zero before anything reads them: grad_norm then
            # measures what is trained, and XLA drops the backward pass only they needed (CMA:
            # the whole frozen UniFormerV2 backbone).
            grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
        return (grads, metrics), model_state

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(base_rng, state.step)  # a resumed run draws the same numbers
        if accum_steps == 1:
            (grads, metrics), model_state = grads_and_metrics(state.params, state.model_state,
                                                              batch, rng)
        else:
            micro = micro_batches(batch, accum_steps)

            def body(carry, xs):
                total, model_state = carry
                i, mb = xs
                out, model_state = grads_and_metrics(state.params, model_state, mb,
                                                     jax.random.fold_in(rng, i))
                return (jax.tree.map(jnp.add, total, out), model_state), None

            first = jax.tree.map(lambda x: x[0], micro)
            zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(
                grads_and_metrics, state.params, state.model_state, first, rng)[0])
            (total, model_state), _ = jax.lax.scan(body, (zeros, state.model_state),
                                                   (jnp.arange(accum_steps), micro))
            grads, metrics = jax.tree.map(lambda x: x / accum_steps, total)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if trainable is not None:  # frozen: the old array itself, not old + 0 (-0.0 stays -0.0)
            params = jax.tree.map(lambda new, old, t: new if t else old, params, state.params,
                                  trainable)
        ema = state.ema_params
        if ema is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return TrainState(state.step + 1, params, opt_state, model_state, ema), metrics

    return train_step


@dataclasses.dataclass
class Step:
    """A jitted train step and what it was built with.

    fn(state, batch) -> (state, metrics): the state is donated; state and batch placed by
    `state_shardings` / `batch_shardings`; metrics replicated. `state` is the state it starts
    from (abstract ShapeDtypeStructs carrying the shardings when built with init=False: the
    restore target, or a compile-only argument)."""

    fn: Any
    state: TrainState
    state_shardings: Any
    batch_shardings: dict
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    trainable: Any  # a tree of bools, or None (everything trains)
    mesh: Any
    task: Any

    def abstract_batch(self, global_batch: int) -> dict:
        """The batch as ShapeDtypeStructs with their shardings, for lowering without data."""
        return {k: jax.ShapeDtypeStruct((global_batch,) + v.shape[1:], v.dtype,
                                        sharding=self.batch_shardings[k])
                for k, v in self.task.init_batch(1).items()}


def build_step(config, mesh, task, d: dict, init_rng: jax.Array, step_rng: jax.Array,
               init: bool = True) -> Step:
    """The train step for (config, mesh, task) with the derived values `d` (peak_lr, min_lr,
    warmup_steps, total_steps: train.derived_values): AdamW on the schedule with the task's
    frozen parameters (`trainable_mask`), its lr multipliers (`lr_scales`), optim.layer_decay,
    optim.ema_decay and
    grad_accum_steps; the state created sharded (init=False: abstract). Call it, and the step,
    inside `jax.set_mesh(mesh)` and `nn.logical_axis_rules(sharding.RULES)`."""
    abstract_params = jax.eval_shape(
        lambda r: nn.meta.unbox(task.init_variables(r, task.init_batch(1)))["params"], init_rng)
    trainable = task.trainable_mask(abstract_params)
    tx, schedule = make_optimizer(config, d, abstract_params, trainable,
                                  task.lr_scales(abstract_params))
    ema_decay = float(config.optim.ema_decay)
    state, state_shardings = create_state(task, tx, mesh, init_rng, init=init, ema=ema_decay > 0)
    batch_shardings = {k: sharding.batch_sharding(mesh, v.ndim)
                       for k, v in task.init_batch(1).items()}
    fn = jax.jit(make_train_step(task, tx, schedule, step_rng, int(config.grad_accum_steps),
                                 ema_decay, trainable),
                 in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, sharding.replicated(mesh)),
                 donate_argnums=(0,))
    return Step(fn, state, state_shardings, batch_shardings, tx, schedule, trainable, mesh, task)
