r"""Fit planner: compile an experiment's train step for a TPU topology on a CPU-only host (or for
this machine's devices) and report per-chip memory, whether it fits, and the compiler's estimate.

  pip install libtpu==0.0.52     # TPU compiler only; no TPU needed (the planner's extra)
  python -m internvideo_jax.plan --config experiments/videomae_pretrain.py:vit_h \
      --topology v5p:4x4x4 [--config.mesh.fsdp=64 ...]
  python -m internvideo_jax.plan --config experiments/finetune.py:tiny --topology local
  python -m internvideo_jax.plan --config experiments/videomae_pretrain.py:vit_h \
      --topology v5p:4x4x4 --slices 2 --config.mesh.dcn_data=2 --config.mesh.data=2
  python -m internvideo_jax.plan --config experiments/umt.py:l16 --topology v5p:4x4x8 \
      "--config.model.teachers[0].size=L/14"      # a teacher by its size: no checkpoint needed

The train step is lowered exactly as train.py jits it (same shardings from the one rules table, the
config's mesh over the topology's chips, the config's global batch, grad accumulation and remat)
and compiled by XLA for that target. Reported per chip: parameters, optimizer state, the batch
(argument bytes), activations and scratch (the compiler's temp buffers), generated code; the sum
against the chip's HBM; model FLOPs per step (internvideo_jax/infra/flops.py) and, where the compiler
gives one, its estimated step time and the MFU that would imply; and what one chip communicates
per step, read from the optimised HLO (internvideo_jax/infra/collectives.py): each kind of collective
with its dtype, the mesh axes it spans, its count and bytes. Nothing is allocated.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile

import flax.linen as nn
import jax
import numpy as np

from internvideo_jax.infra import collectives, flops, hardware, sharding
from internvideo_jax.models import layout
from internvideo_jax.tasks import get_task
from internvideo_jax.training import steps, train


def topology_devices(topology: str, slices: int = 1):
    """Devices of a TPU topology ('v5p:4x4x4', compiled for, not present) or 'local'. slices > 1:
    that many copies of the topology joined by DCN (multi-slice; devices carry slice_index)."""
    if topology == "local":
        return jax.devices()
    from jax.experimental import topologies
    # v4 (and v5p) chips have two TensorCores run as one device ("megacore"), as on a real VM.
    kwargs = {"chip_config_name": "megacore"} if topology.startswith(("v4", "v5p")) else {}
    if slices > 1:
        kwargs["num_slices"] = slices
    try:
        return topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                            **kwargs).devices
    except Exception as e:  # no libtpu, or an unknown name
        raise RuntimeError(f"cannot describe TPU topology {topology!r}: {e}. Install the TPU "
                           f"compiler (pip install libtpu==0.0.52) and use names such as "
                           f"v5p:4x4x4, v4:4x4x8, v5e:4x4, v6e:4x4.") from e


def _nbytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def _sharded_bytes(tree, shardings) -> int:
    """Bytes of one device's shard of every leaf (abstract arrays + their NamedShardings)."""
    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shard = s.shard_shape(x.shape)
        total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
    return total


def compile_with_hlo(lowered) -> tuple:
    """(compiled, optimised HLO text). The text comes from XLA's dump: libtpu's executables do not
    all print (`as_text` fails on some TPU async instructions). The persistent compilation cache
    is off for this compile, as a cache hit would dump nothing."""
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with tempfile.TemporaryDirectory() as dump:
            compiled = lowered.compile({"xla_dump_to": dump, "xla_dump_hlo_as_text": True})
            texts = glob.glob(os.path.join(dump, "*after_optimizations.txt"))
            if not texts:
                raise RuntimeError(f"XLA wrote no optimised HLO to {dump}: cannot count the "
                                   f"step's collectives.")
            with open(max(texts, key=os.path.getsize)) as f:
                return compiled, f.read()
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)


def plan(config, topology: str, slices: int = 1) -> dict:
    devices = topology_devices(topology, slices)
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    if config.task == "umt_distill":  # nothing is loaded: a teacher given by its size suffices
        from internvideo_jax.tasks import umt_distill
        task = umt_distill.build(config, random_teachers=True)
    else:
        task = get_task(config)
    train.check_batch(config, mesh)
    d = {"peak_lr": 1e-4, "min_lr": 0.0, "warmup_steps": 10, "total_steps": 1000}
    rng = jax.random.key(0)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        built = steps.build_step(config, mesh, task, d, rng, rng, init=False)
        state, state_shardings = built.state, built.state_shardings
        batch = built.abstract_batch(config.batch_size)
        compiled, hlo = compile_with_hlo(built.fn.lower(state, batch))
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gib = 2.0 ** 30
    params_bytes = _sharded_bytes(state.params, state_shardings.params)
    opt_bytes = _sharded_bytes(state.opt_state, state_shardings.opt_state)
    per_chip = {
        "params_gib": params_bytes / gib,
        "optimizer_state_gib": opt_bytes / gib,
        "arguments_gib": memory.argument_size_in_bytes / gib,
        "activations_and_temp_gib": memory.temp_size_in_bytes / gib,
        "code_gib": memory.generated_code_size_in_bytes / gib,
    }
    # Donated state: outputs alias the arguments, so peak = arguments + temp + code.
    per_chip["total_gib"] = (per_chip["arguments_gib"] + per_chip["activations_and_temp_gib"]
                             + per_chip["code_gib"])
    chip = (hardware.by_topology(topology.split(":")[0]) if topology != "local"
            else hardware.by_kind(devices[0].device_kind))
    hbm = chip.hbm_gib if chip else None
    report = {
        "topology": topology, "slices": slices, "chips": len(devices),
        "mesh": dict(mesh.shape), "dcn_data": int(config.mesh.dcn_data),
        "global_batch": config.batch_size, "parameters": _nbytes(state.params) // 4,
        "per_chip": {k: round(v, 3) for k, v in per_chip.items()},
        "per_chip_bytes": {"params": params_bytes, "optimizer_state": opt_bytes,
                           "temp": int(memory.temp_size_in_bytes)},
        "hbm_gib": hbm, "fits": None if hbm is None else per_chip["total_gib"] <= hbm,
    }
    rows = collectives.census(hlo, dict(mesh.shape), slices)
    report["collectives_per_chip"] = [{**r, "full_gib": round(r["full_bytes"] / gib, 4),
                                       "ring_gib": round(r["ring_bytes"] / gib, 4)} for r in rows]
    report["collectives_summary"] = collectives.describe(rows)
    per_example = flops.training_flops_per_example(task)
    if per_example:
        step_flops = per_example * config.batch_size
        report["model_tflop_per_step"] = step_flops / 1e12
        seconds = cost.get("optimal_seconds")
        peak = flops.peak_flops(devices[0])
        if layout.is_scanned(state.params):
            # The cost model counts a while loop's body once, not once per trip: no estimate.
            report["compiler_step_seconds_note"] = ("omitted: the compiler's cost model counts "
                                                    "the scanned layers' loop body once")
        elif seconds and seconds > 0:
            report["compiler_step_seconds"] = float(seconds)
            if peak:
                report["implied_mfu"] = step_flops / len(devices) / float(seconds) / peak
    return report


def main(argv) -> None:
    del argv
    report = plan(_CONFIG.value, _TOPOLOGY.value, _SLICES.value)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file:preset.",
                                              lock_config=True)
    _TOPOLOGY = flags.DEFINE_string("topology", "local",
                                    "TPU topology (v5p:4x4x4, v4:4x4x8, ...) or 'local'.")
    _SLICES = flags.DEFINE_integer("slices", 1, "Copies of the topology joined by DCN (multi-"
                                   "slice); set --config.mesh.dcn_data to the same number.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
