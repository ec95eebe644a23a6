r"""Compile time of a train step with scanned layers (model.scan_layers) against the per-layer
(unrolled) model, same config, in one run: VideoMAE pretraining (experiments/videomae_pretrain.py)
or multimodal pretraining (experiments/mm_pretrain.py: UniFormerV2 video tower and CLIP text
encoder scanned; the caption decoder stays per layer).

The whole jitted step (forward, norm-pixel loss, backward, AdamW) is lowered from abstract state
(no weights are allocated) and compiled for this machine's default device; the time is
lower() + compile(), the best of --repeats with the persistent compilation cache off. With
--run, the compiled step is also executed (real weights, batch 1) and its time reported.

  python benchmarks/compile_time.py --presets vit_b,vit_l,vit_h
  python benchmarks/compile_time.py --experiment mm_pretrain --presets b16,l14
Prints one JSON line per (preset, layout) and markdown rows for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_seconds(experiment: str, preset: str, scan: bool, repeats: int, run: bool) -> dict:
    import importlib

    import flax.linen as nn
    import jax
    import numpy as np

    from internvideo_jax.infra import sharding
    from internvideo_jax.training import steps
    from internvideo_jax.tasks import get_task
    config = importlib.import_module(f"experiments.{experiment}").get_config(preset)
    config.model.scan_layers = scan
    config.mesh.update(data=1, fsdp=1, tensor=1)
    task = get_task(config)
    mesh = sharding.make_mesh(config.mesh.to_dict(), jax.devices()[:1])
    d = {"peak_lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 0, "total_steps": 10}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        built = steps.build_step(config, mesh, task, d, jax.random.key(0), jax.random.key(1),
                                 init=False)  # exactly the step training runs
        state, step, batch = built.state, built.fn, built.abstract_batch(1)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            compiled = step.lower(state, batch).compile()
            best = min(best, time.perf_counter() - start)
        out = {"preset": preset, "layout": "scanned" if scan else "per-layer",
               "compile_s": round(best, 2)}
        if run:
            real = steps.build_step(config, mesh, task, d, jax.random.key(0),
                                    jax.random.key(1)).state
            host = task.init_batch(1)
            host["video"] = np.random.default_rng(0).integers(0, 256, host["video"].shape,
                                                              dtype=np.uint8)
            if "text" in host:  # token ids ending in the end-of-text id (the largest)
                host["text"][:, :3] = [49406, 320, 49407]
            arrays = sharding.put_batch(host, mesh)
            real, _ = jax.block_until_ready(compiled(real, arrays))  # the state is donated
            start = time.perf_counter()
            jax.block_until_ready(compiled(real, arrays))
            out["step_s"] = round(time.perf_counter() - start, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="videomae_pretrain",
                   choices=["videomae_pretrain", "mm_pretrain"])
    p.add_argument("--presets", default="vit_b,vit_l")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--run", action="store_true", help="also time one compiled step")
    a = p.parse_args()
    import jax
    jax.config.update("jax_enable_compilation_cache", False)
    rows = []
    for preset in a.presets.split(","):
        for scan in (False, True):
            r = compile_seconds(a.experiment, preset, scan, a.repeats, a.run)
            r.update(device=jax.devices()[0].device_kind, cpus=os.cpu_count(),
                     machine=platform.machine())
            print(json.dumps(r), flush=True)
            rows.append(r)
    for preset in a.presets.split(","):
        per_layer, scanned = [r for r in rows if r["preset"] == preset]
        print(f"| {preset} | {per_layer['compile_s']} | {scanned['compile_s']} | "
              f"{per_layer['compile_s'] / scanned['compile_s']:.1f}x |"
              + (f" {per_layer['step_s']} | {scanned['step_s']} |" if a.run else ""))


if __name__ == "__main__":
    main()
