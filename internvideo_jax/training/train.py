"""The training loop shared by every task (see internvideo_jax/tasks).

Read top to bottom: mesh -> task -> input -> derived values -> state (created sharded) -> checkpoint
restore -> jitted step -> loop (log, checkpoint).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from absl import logging

from input_pipelines import sources
from input_pipelines.robust import BadVideoTracker
from internvideo_jax.evaluation import periodic_eval, pictures
from internvideo_jax.infra import flops, sharding
from internvideo_jax.models import attention, layout
from internvideo_jax.tasks import get_task
from internvideo_jax.training import checkpointing, optim
from internvideo_jax.training.metrics_writer import MetricsWriter
# re-exported: what callers built steps from before steps.py
from internvideo_jax.training.steps import (TrainState, build_step, create_state,  # noqa: F401
                                   make_optimizer, make_train_step, micro_batches)
from internvideo_jax.tree import flatten, unflatten


def check_batch(config, mesh) -> int:
    """The per-process batch; fails early when the batch cannot be split as the mesh needs."""
    global_batch, dp, procs = config.batch_size, sharding.data_parallel_size(mesh), jax.process_count()
    if global_batch <= 0 or global_batch % dp:
        raise ValueError(
            f"batch_size={global_batch} is not divisible by the {dp} data-parallel devices "
            f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}): set "
            f"--config.batch_size to a multiple of {dp}.")
    accum = int(config.grad_accum_steps)
    if accum < 1 or global_batch % (dp * accum):
        raise ValueError(
            f"batch_size={global_batch} is not divisible by {dp} data-parallel devices x "
            f"grad_accum_steps={accum}: each micro-batch must split evenly over the devices.")
    if global_batch % procs:
        raise ValueError(f"batch_size={global_batch} is not divisible by the {procs} processes: "
                         f"set --config.batch_size to a multiple of {procs}.")
    return global_batch // procs


def derived_values(config, mesh, epoch_size_per_process: int) -> dict:
    """Global/local batch, steps, warmup and learning rates: computed once, printed at start."""
    local_batch = check_batch(config, mesh)
    global_batch, procs = config.batch_size, jax.process_count()
    steps_per_epoch = (epoch_size_per_process * procs) // global_batch
    if config.total_steps > 0:
        total_steps = int(config.total_steps)
    else:
        total_steps = int(math.ceil(config.num_epochs * steps_per_epoch))
    if total_steps <= 0:
        raise ValueError("Nothing to train: set config.num_epochs > 0 or config.total_steps > 0.")
    o = config.optim
    return {
        "global_batch": global_batch,
        "local_batch": local_batch,
        "processes": procs,
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": int(round(o.warmup_epochs * steps_per_epoch)),
        "peak_lr": optim.scaled_lr(o.base_lr, global_batch),
        "min_lr": optim.scaled_lr(o.min_lr, global_batch),
    }


# Config keys that may differ between a checkpoint and the run resuming it: where and how the run
# executes, logs and is evaluated, not what it computes (the mesh: restores reshard).
RESUMABLE_CHANGES = ("data.num_workers", "data.num_threads", "data.prefetch_batches",
                     "data.data_dir", "data.video_root", "data.max_bad_videos",
                     "data.max_bad_fraction", "data.eval_dataset", "data.allow_eval_on_train",
                     "mesh.", "eval.", "evals.", "log_every", "checkpoint_every",
                     "keep_checkpoints", "peak_tflops", "init_from", "resume_strict",
                     "allow_config_change", "features.", "pictures.")


def check_pictures(config, task) -> None:
    """Fail at start on a pictures block that cannot work (config.pictures)."""
    p = config.pictures
    if p.every_steps < 0 or p.videos < 1:
        raise ValueError(f"pictures.every_steps={p.every_steps}, pictures.videos={p.videos}: give "
                         f"every_steps 0 (off) or a step count, and videos >= 1.")
    if p.every_steps and not task.implements("pictures"):
        raise ValueError(f"task {config.task!r} draws no pictures while training (only "
                         f"videomae_pretrain does): set --config.pictures.every_steps=0. Its "
                         f"evaluation's pictures are written at the end regardless.")


def pictures_due(config, done: int, total_steps: int) -> bool:
    """Whether the task's training pictures are drawn after step `done` (config.pictures)."""
    every = config.pictures.every_steps
    return bool(every) and (done % every == 0 or done == total_steps)


def _flat(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def check_resume_config(saved: dict, config, step: int, where: str) -> None:
    """Refuse to resume with a recipe other than the checkpoint's (a new schedule over the old
    iterator drifts silently), listing the differences, unless each changed key is one of
    RESUMABLE_CHANGES or named in config.allow_config_change ('batch_size,optim.base_lr')."""
    if not saved:
        return
    saved_scan = saved.get("model", {}).get("scan_layers", False)
    # models without scanned layers (the localization head) have no such key
    scan = config.model.scan_layers if "scan_layers" in config.model else False
    if saved_scan != scan:
        raise ValueError(
            f"{where}/{step} was saved with model.scan_layers={saved_scan}: resume with the same "
            f"layout, or start a new workdir with init_from=<this workdir> (init_from converts "
            f"the layer layout).")
    allowed = [k.strip() for k in str(config.allow_config_change).split(",") if k.strip()]
    old, new = _flat(saved), _flat(json.loads(json.dumps(config.to_dict(), default=str)))
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") == new.get(key, "<absent>"):
            continue
        if any(key == a or (a.endswith(".") and key.startswith(a))
               for a in (*RESUMABLE_CHANGES, *allowed)):
            continue
        changed.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    if changed:
        keys = ",".join(c.split(":")[0] for c in changed)
        raise ValueError(
            f"{where}/{step} was saved with another config: {'; '.join(changed[:10])}"
            f"{' ...' if len(changed) > 10 else ''}. Resume with the same settings, start a new "
            f"workdir (with --config.init_from to start from these weights), or allow the change "
            f"with --config.allow_config_change={keys}")


def newest_readable_step(ckpt, strict: bool) -> tuple[int | None, dict]:
    """(the newest saved step whose metadata reads, that metadata); damaged newer ones are set
    aside with a warning (or, strict, refused)."""
    for step in ckpt.steps():
        try:
            return step, ckpt.restore_meta(step)
        except Exception as e:  # noqa: BLE001
            damaged(ckpt, step, e, strict)
    return None, {}


def damaged(ckpt, step: int, error: BaseException, strict: bool) -> None:
    """Warn that checkpoint `step` is damaged and rename its folder (or, strict, refuse)."""
    folder = f"{ckpt.directory}/{step}"
    reason = checkpointing.damage_reason(error)
    if strict:
        raise checkpointing.NoIntactCheckpoint(
            f"checkpoint {folder} is damaged ({reason}); config.resume_strict=True refuses to "
            f"fall back to an older one: repair or move it, or resume without resume_strict.")
    moved = ckpt.set_aside(step)
    logging.warning("checkpoint %s is damaged (%s): renamed to %s (nothing deleted); resuming "
                    "from the newest intact checkpoint before it", folder, reason, moved)


def resume_point(ckpt, config) -> tuple[int | None, dict, bool]:
    """(the step to resume from or None, its metadata, whether the input pipeline is rebuilt at
    that position). The pipeline is rebuilt when the worker count changed: every element is a
    pure function of its position, and grain's saved state needs the same worker count."""
    latest, saved_meta = newest_readable_step(ckpt, config.resume_strict)
    if latest is not None:
        check_resume_config(saved_meta.get("config", {}), config, latest, ckpt.directory)
    saved_workers = saved_meta.get("data_workers")
    by_position = saved_workers is not None and saved_workers != config.data.num_workers
    return latest, saved_meta, by_position


def count_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def initialised(task, config, state: TrainState, shardings) -> tuple[TrainState, str | None]:
    """A fresh state with the weights a run starts from: the task's own (`initial_params`, e.g.
    CMA's two checkpoints) or config.init_from's (params through task.load_pretrained, model state
    such as BatchNorm statistics by carry_model_state); placed by `shardings`. Returns (state,
    the report for the log, or None when nothing was loaded)."""
    own = task.initial_params(state.params)
    if own is not None:
        params, report = own
    elif config.init_from:
        pretrained, _ = checkpointing.load_variables(  # in this model's layer layout
            config.init_from, scanned=layout.is_scanned(state.params))
        params, loaded, kept = task.load_pretrained(state.params, pretrained.pop("params"))
        model_state, state_report = carry_model_state(state.model_state, pretrained)
        state = state.replace(model_state=jax.device_put(model_state, shardings.model_state))
        report = (f"initialised from {config.init_from}: {len(loaded)} tensors loaded, "
                  f"{len(kept)} at their initial values: {kept}" + state_report)
    else:
        return state, None
    params = jax.device_put(params, shardings.params)
    return state.replace(params=params, ema_params=params if state.ema_params is not None
                         else None), report


def carry_model_state(model_state: dict, pretrained: dict) -> tuple[dict, str]:
    """The model state (e.g. UniFormerV2's BatchNorm running statistics, 'batch_stats') taken
    from init_from's variables where the path and shape agree; the rest keeps its initial value.
    Returns (model_state, a report to append to the init report: what came, what did not)."""
    out, report = {}, ""
    for collection, tree in model_state.items():
        ours, theirs = flatten(tree), flatten(pretrained.get(collection, {}))
        taken = {p for p, v in ours.items() if p in theirs and
                 tuple(np.shape(theirs[p])) == tuple(v.shape)}
        out[collection] = unflatten({p: theirs[p] if p in taken else v for p, v in ours.items()})
        report += (f"; {collection}: {len(taken)} of {len(ours)} tensors from init_from" +
                   (f" (the rest at their initial values: init_from has "
                    f"{'no ' + collection if not theirs else 'other shapes or paths'})"
                    if len(taken) < len(ours) else ""))
    return out, report


def train(config, workdir: str, *, stop_after_step: int | None = None,
          progress: bool = True) -> TrainState:
    """Train until config's total steps (resuming from WORKDIR/checkpoints if present).

    stop_after_step: return right after this step's checkpoint (simulates an interruption).
    """
    # ---- Mesh -------------------------------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh.to_dict())

    # ---- Task and input ---------------------------------------------------------------------
    task = get_task(config)  # validates model/data config
    periodic_eval.check(config, task)
    check_pictures(config, task)
    local_batch = check_batch(config, mesh)
    sources.check_exists(config.data)  # before anything is written into the workdir
    ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    latest, saved_meta, by_position = resume_point(ckpt, config)

    def input_stream(start_step: int):
        return task.train_dataset(config.seed, local_batch, jax.process_index(),
                                  jax.process_count(), start_step=start_step)

    dataset, epoch_size = input_stream(latest if by_position else 0)
    d = derived_values(config, mesh, epoch_size)

    # ---- State (created sharded), optimizer, checkpoint ---------------------------------------
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        built = build_step(config, mesh, task, d, init_rng, step_rng, init=latest is None)
        state, state_shardings, trainable = built.state, built.state_shardings, built.trainable
        abstract_state = state
        init_report = None
        if latest is None:
            state, init_report = initialised(task, config, state, state_shardings)
        data_iter = iter(dataset)
        meta = {"config": config.to_dict(), "derived": d, "data_workers": config.data.num_workers}
        # the evaluation protocol and label map, and what model.size=init_from reads
        stored = {"protocol": task.protocol(), "architecture": task.architecture()}
        meta.update({k: v for k, v in stored.items() if v is not None})
        while latest is not None:  # the newest intact checkpoint; damaged ones set aside
            try:
                state = ckpt.restore(latest, abstract_state, None if by_position else data_iter)
                checkpointing.check_fingerprint(state, saved_meta, f"{ckpt.directory}/{latest}")
                break
            except Exception as e:  # noqa: BLE001 - orbax/TensorStore raise many kinds
                _close(data_iter)
                damaged(ckpt, latest, e, config.resume_strict)
                latest, saved_meta, by_position = resume_point(ckpt, config)
                if latest is None:
                    raise checkpointing.NoIntactCheckpoint(
                        f"no checkpoint in {ckpt.directory} restores (damaged ones were renamed "
                        f"*.damaged): move the folder away to start the run over.") from e
                data_iter = iter(input_stream(latest if by_position else 0)[0])
        saved_workers = saved_meta.get("data_workers")
        start = int(state.step)

        writer = MetricsWriter(workdir, d["total_steps"], start, progress)
        writer.info(f"derived: {json.dumps(d)}")
        writer.info(f"parameters: {count_params(state.params):,}")
        for name, tree in (("params", state.params), ("optimizer state", state.opt_state)):
            writer.info(sharding.describe_placement(name, tree))
        if trainable is not None:
            n = count_params([p for p, t in zip(jax.tree.leaves(state.params),
                                                jax.tree.leaves(trainable)) if t])
            writer.info(f"trainable parameters: {n:,} (the rest frozen: no update, no "
                        f"optimizer state)")
        if init_report:
            writer.info(init_report)
        if latest is not None:
            how = (f"the input pipeline rebuilt at step {latest} (saved with {saved_workers} "
                   f"workers, now {config.data.num_workers})" if by_position else
                   "the saved input pipeline state")
            writer.info(f"resumed from {ckpt.directory}/{latest} at step {start} with {how}")
        if start >= d["total_steps"]:
            writer.info(f"training is already complete ({start}/{d['total_steps']} steps)")
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump(meta, f, indent=1, default=str)

        step_fn = built.fn  # (state, batch) -> (state, metrics), built above (steps.py)

        # Throughput: model FLOPs of a step (analytic: 3x the forward, or the task's own count
        # where parts are frozen) against the devices' peak.
        per_example = flops.training_flops_per_example(task)
        step_flops = per_example * d["global_batch"] if per_example else None
        peak = config.peak_tflops * 1e12 or flops.peak_flops(jax.devices()[0])
        if step_flops:
            writer.info(f"model FLOPs per step: {step_flops / 1e12:.3f} TFLOP; device peak: "
                        f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (no MFU)'}")

        # ---- Evaluation while training (config.evals) -----------------------------------------
        periodic_config = periodic_eval.eval_config(config)
        best = (periodic_eval.BestCheckpoint(workdir, config.evals.keep_best)
                if config.evals.keep_best else None)

        def evaluate_now(done: int, state: TrainState) -> None:
            result = task.evaluate(state.eval_variables(), mesh, periodic_config)
            values = periodic_eval.scalars(result, periodic_eval.prefix(config))
            writer.write(done, values)
            if best is not None and best.offer(done, values, state.eval_variables()):
                writer.info(f"best {best.metric} so far ({values[best.metric]:.4f} at step "
                            f"{done}): kept in {best.directory}")

        # ---- Loop -------------------------------------------------------------------------------
        bad_videos = BadVideoTracker(config.data.max_bad_videos, config.data.max_bad_fraction,
                                     epoch_size // config.data.num_repeats)
        pending, data_wait, t_last = [], 0.0, time.perf_counter()
        for step in range(start, d["total_steps"]):
            t0 = time.perf_counter()
            batch = sharding.put_batch(bad_videos.update(next(data_iter)), mesh)
            data_wait += time.perf_counter() - t0
            if step == start:  # traced now: say which attention kernels it took
                with attention.record_choices() as choices:
                    state, metrics = step_fn(state, batch)
                writer.info(attention.describe(choices))
            else:
                state, metrics = step_fn(state, batch)
            pending.append(metrics)
            done = step + 1
            ckpt.check_saves(done)  # a failed background save stops the run here
            writer.advance()
            if done % config.log_every == 0 or done == d["total_steps"]:
                values = jax.device_get(pending)  # the only host sync of the loop
                now = time.perf_counter()
                elapsed = now - t_last
                scalars = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
                scalars.update(step_time=elapsed / len(values),
                               clips_per_s=d["global_batch"] * len(values) / elapsed,
                               data_wait=data_wait / elapsed, bad_videos=bad_videos.distinct,
                               bad_draws=bad_videos.count)
                if step_flops:
                    per_device = step_flops * len(values) / elapsed / jax.device_count()
                    scalars["tflops_per_device"] = per_device / 1e12
                    if peak:
                        scalars["mfu"] = per_device / peak
                writer.write(done, scalars)
                pending, data_wait, t_last = [], 0.0, now
            if done % config.checkpoint_every == 0 or done == d["total_steps"]:
                ckpt.save(done, state, data_iter, meta)
            if periodic_eval.due(config, done, d["total_steps"]):
                evaluate_now(done, state)
            if pictures_due(config, done, d["total_steps"]):
                t_pictures = time.perf_counter()
                drawn = task.pictures(state.eval_variables(), mesh, config, done, workdir)
                writer.images(drawn, done)
                writer.info(f"pictures at step {done}: {len(drawn)} in "
                            f"{time.perf_counter() - t_pictures:.2f} s")
                t_last += time.perf_counter() - t_pictures  # not counted in step_time
            if stop_after_step is not None and done >= stop_after_step:
                break
        ckpt.close()
        _close(data_iter)
        if task.implements("evaluate") and int(state.step) >= d["total_steps"]:
            before = pictures.png_times(workdir)
            result = task.evaluate(state.eval_variables(), mesh, config, out_dir=workdir)
            final = periodic_eval.scalars(result, "eval_")
            writer.write(d["total_steps"], final)
            # the evaluation's pictures (confusion matrix, timelines, ...) in TensorBoard too
            writer.images(pictures.written_since(workdir, before), d["total_steps"])
            if best is not None and config.evals.views == "multi":  # the last periodic one
                best.offer(d["total_steps"], final, state.eval_variables())
            if jax.process_index() == 0:  # the whole result, with the videos it left out
                with open(os.path.join(workdir, f"eval_{config.eval.split}.json"), "w") as f:
                    json.dump(result, f, indent=1)
        writer.close()
        if jax.process_index() == 0 and int(state.step) >= d["total_steps"]:
            # loss, lr and every evaluation over the steps, resumes included: workdir/curves.png
            pictures.training_curves_of(workdir)
    return state


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()
