r"""VideoMAE pretraining step throughput: ours (jax.jit) against HF transformers'
VideoMAEForPreTraining (PyTorch), same architecture, batch and mask, in one run.

Both sides run a full training step: normalisation of the uint8 clip, forward, norm-pixel MSE on
the masked tokens, backward, AdamW update. Setting: 16 frames at 224x224, tubelet 2, patch 16,
90% tube masking (the same boolean mask for both), float32 on CPU. On a GPU both sides run there:
--dtype bfloat16 gives ours bf16 compute with float32 master weights, and HF torch.autocast(bf16)
with its SDPA attention (flash) and fused AdamW, float32 master weights too. clips/s is the best of
--repeats timed steps after --warmup untimed ones (each step synchronises with the device).
MFU = model FLOPs (internvideo_jax/infra/flops.py, 3x the forward) per second over the machine's peak:
the published bf16 peak of a known accelerator (its measured bf16 8192^3 matmul rate printed
beside it), else a measured one (the best f32 matmul FLOP/s of a 2048^3 jitted matmul).

Implementations: 'hf' (the baseline), 'ours' (attention 'auto': the blocked CPU kernel of
internvideo_jax/models/attention.py on the CPU), 'ours_xla_attention' (the same step with
jax.nn.dot_product_attention, our previous default) and 'ours_dual' (ours with VideoMAE V2's dual
masking: a running cell decoder mask of ratio 0.5, so the decoder runs on the visible tokens and
half the clip's positions instead of all of them; its MFU counts its own, smaller, FLOPs).
--image sets the frame size (224 by default; a smaller one for a smoke run). Each measurement runs in a fresh process, so
PyTorch's and XLA's thread pools never share the cores, and --rounds rounds alternate the order;
a shared host's speed drifts by tens of percent over minutes, so the best of all rounds is kept.

  pip install torch==2.13.0 transformers==5.24.0    # the benchmark's extra
  python benchmarks/train_step.py --sizes S,B --batch 2
  python benchmarks/train_step.py --sizes B --impls hf,ours,ours_dual   # V1 beside V2
Prints one JSON line per measurement and markdown rows for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FRAMES, IMAGE, MASK_RATIO = 16, 224, 0.9
DECODER_MASK_RATIO = 0.5  # ours_dual: VideoMAE V2's running cell decoder mask
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def make_batch(size, batch: int, seed: int = 0, frames: int = FRAMES,
               image: int = IMAGE) -> tuple[np.ndarray, np.ndarray]:
    """(video (B, T, H, W, 3) uint8, mask (B, N) bool) with int(0.9 * hw) tokens masked per tube."""
    from input_pipelines.masking import tube_mask
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (batch, frames, image, image, 3), dtype=np.uint8)
    grid = (frames // size.tubelet, image // size.patch, image // size.patch)
    mask = np.stack([tube_mask(grid, MASK_RATIO, rng) for _ in range(batch)])
    return video, mask.reshape(batch, -1)


def make_decoder_mask(size, batch: int, seed: int = 0, frames: int = FRAMES,
                      image: int = IMAGE) -> np.ndarray:
    """(B, N) bool running cell decoder masks (True = not decoded), ratio DECODER_MASK_RATIO."""
    from input_pipelines.masking import running_cell_mask
    rng = np.random.default_rng(seed + 1)
    grid = (frames // size.tubelet, image // size.patch, image // size.patch)
    return np.stack([running_cell_mask(grid, DECODER_MASK_RATIO, rng) for _ in range(batch)])


def time_steps(step, warmup: int, repeats: int) -> float:
    """Best wall time of `repeats` calls of step() after `warmup` calls (step() must block)."""
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def build_step(size_name: str, video: np.ndarray, mask: np.ndarray, dtype: str,
               attention: str = "auto", decoder_mask: np.ndarray | None = None):
    """Our VideoMAE pretraining step on one device, compiled: (step(state, batch) -> (state,
    metrics), with the state donated; the initial state; the batch on the device). video (B, T,
    S, S, 3) uint8 and mask (B, N) bool set the shapes; dtype is the compute dtype (weights and
    optimizer state stay float32); attention a models/attention.py implementation, fixed here
    because it is chosen when the step is traced. decoder_mask (B, N) bool: dual masking
    (model.decoder_mask_ratio = DECODER_MASK_RATIO)."""
    import flax.linen as nn
    import jax
    from experiments.videomae_pretrain import get_config
    from internvideo_jax.infra import sharding
    from internvideo_jax.training import steps
    from internvideo_jax.models import attention as attention_lib
    from internvideo_jax.tasks import get_task
    config = get_config("tiny")
    config.model.update(size=size_name, dtype=dtype, mask_ratio=MASK_RATIO,
                        decoder_mask_ratio=DECODER_MASK_RATIO if decoder_mask is not None else 0.0)
    config.data.update(num_frames=video.shape[1], crop_size=video.shape[2])
    config.mesh.update(data=1, fsdp=1, tensor=1)
    task = get_task(config)
    mesh = sharding.make_mesh(config.mesh.to_dict(), jax.devices()[:1])
    d = {"peak_lr": 1.5e-4, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 1000}
    with (jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES),
          attention_lib.use_implementation(attention)):
        built = steps.build_step(config, mesh, task, d, jax.random.key(0), jax.random.key(1))
        state = built.state  # the step training runs (steps.build_step), state donated
        arrays = {"video": video, "mask": mask}
        if decoder_mask is not None:
            arrays["decoder_mask"] = decoder_mask
        batch = sharding.put_batch(arrays, mesh)
        step = built.fn.lower(state, batch).compile()
    return step, state, batch


def ours(size_name: str, video: np.ndarray, mask: np.ndarray, dtype: str, warmup: int,
         repeats: int, attention: str = "auto", dual: bool = False) -> float:
    import jax
    from internvideo_jax.models.videomae import get_size
    decoder_mask = make_decoder_mask(get_size(size_name), video.shape[0], frames=video.shape[1],
                                     image=video.shape[2]) if dual else None
    fn, state, batch = build_step(size_name, video, mask, dtype, attention, decoder_mask)
    holder = [state]

    def step():
        holder[0], metrics = fn(holder[0], batch)
        jax.block_until_ready(metrics["loss"])

    return time_steps(step, warmup, repeats)


def hf(size_name: str, video: np.ndarray, mask: np.ndarray, dtype: str, warmup: int,
       repeats: int) -> float:
    import torch
    from transformers import VideoMAEConfig, VideoMAEForPreTraining
    from internvideo_jax.models.videomae import get_size
    s = get_size(size_name)
    config = VideoMAEConfig(
        image_size=video.shape[2], patch_size=s.patch, num_frames=FRAMES, tubelet_size=s.tubelet,
        hidden_size=s.dim, num_hidden_layers=s.depth, num_attention_heads=s.heads,
        intermediate_size=s.mlp_dim, decoder_hidden_size=s.decoder_dim,
        decoder_num_hidden_layers=s.decoder_depth, decoder_num_attention_heads=s.decoder_heads,
        decoder_intermediate_size=s.decoder_mlp_dim, norm_pix_loss=True, layer_norm_eps=1e-6,
        qkv_bias=True, use_mean_pooling=False, attn_implementation="sdpa")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = VideoMAEForPreTraining(config).train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05,
                            fused=device == "cuda")
    raw, bool_mask = torch.from_numpy(video).to(device), torch.from_numpy(mask).to(device)
    mean, std = torch.from_numpy(MEAN).to(device), torch.from_numpy(STD).to(device)
    autocast = dtype == "bfloat16"

    def step():
        pixels = ((raw.float() / 255.0 - mean) / std).permute(0, 1, 4, 2, 3)  # (B, T, C, H, W)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(pixel_values=pixels, bool_masked_pos=bool_mask).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return time_steps(step, warmup, repeats)


UMT_SIZES = ("B", "L")  # the students models/umt.py has (B/16_t1, L/16_t1)
UMT_FRAMES = 8  # UMT-B/16's clips: 8 frames (TSN segments) at the VideoMAE clip's frame size


def umt_task(size_name: str, image: int, dtype: str):
    """The UMT step's task (experiments/umt.py:b16): student ViT-{size}/16 with tubelet 1 on 8
    frames, attention-guided masking 0.8, a randomly initialised CLIP ViT-{size}/16 teacher (no
    checkpoint: tasks/umt_distill.build(random_teachers=True)), its last 6 layers."""
    from experiments.umt import get_config
    from internvideo_jax.tasks import umt_distill
    config = get_config("b16")
    config.model.update(size=f"{size_name}/16_t1", dtype=dtype,
                        teachers=(umt_distill.teacher_spec(layers=6, size=f"{size_name}/16",
                                                           resolution=image),))
    config.data.update(num_frames=UMT_FRAMES, crop_size=image)
    config.mesh.update(data=1, fsdp=1, tensor=1)
    return config, umt_distill.build(config, random_teachers=True)


def umt(size_name: str, video: np.ndarray, mask: np.ndarray, dtype: str, warmup: int,
        repeats: int) -> float:
    """Our UMT distillation step (umt_task) on one device: the frozen teacher's forward, the
    student's forward and backward, AdamW on the student; a batch of video's size of 8-frame
    clips (the first 8 frames of each)."""
    import flax.linen as nn
    import jax
    from internvideo_jax.infra import sharding
    from internvideo_jax.training import steps
    config, task = umt_task(size_name, video.shape[2], dtype)
    mesh = sharding.make_mesh(config.mesh.to_dict(), jax.devices()[:1])
    d = {"peak_lr": 1.5e-4, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 1000}
    arrays = task.init_batch(video.shape[0])
    arrays["video"] = np.ascontiguousarray(video[:, :UMT_FRAMES])
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        built = steps.build_step(config, mesh, task, d, jax.random.key(0), jax.random.key(1))
        holder = [built.state]
        batch = sharding.put_batch(arrays, mesh)
        fn = built.fn.lower(built.state, batch).compile()

    def step():
        holder[0], metrics = fn(holder[0], batch)
        jax.block_until_ready(metrics["loss"])

    return time_steps(step, warmup, repeats)


IMPLEMENTATIONS = {
    "hf": hf,
    "ours": ours,
    "ours_xla_attention": lambda *a: ours(*a, attention="xla"),
    "ours_dual": lambda *a: ours(*a, dual=True),
    "ours_umt": umt,  # UMT-{size}/16 distillation: another clip (8 frames), another model
}


def measure_peak(_) -> None:
    """The device's peak FLOP/s in this process: prints {"kind", "peak", "peak_kind"}. (A fresh
    process, like the measurements: JAX keeps an accelerator's memory while its process lives.)"""
    import jax
    from internvideo_jax.infra import flops
    device = jax.devices()[0]
    value, kind = flops.peak_flops(device), "published bf16"
    if value is None:
        value, kind = flops.measured_matmul_peak(), "measured f32 matmul"
    else:  # an accelerator: what its bf16 matmuls reach here, beside the datasheet figure
        import jax.numpy as jnp
        measured = flops.measured_matmul_peak(8192, jnp.bfloat16, repeats=10)
        kind += f"; measured bf16 8192^3 matmul here: {measured / 1e12:.0f} TFLOP/s"
    print(json.dumps({"kind": device.device_kind, "peak": value, "peak_kind": kind}))


def child(a) -> None:
    """One measurement in this process: prints {"step_s": ...}."""
    if a.child == "peak":
        return measure_peak(a)
    from internvideo_jax.models.videomae import get_size
    video, mask = make_batch(get_size(a.size), a.batch, image=a.image)
    seconds = IMPLEMENTATIONS[a.child](a.size, video, mask, a.dtype, a.warmup, a.repeats)
    print(json.dumps({"step_s": seconds}))


def run_fresh(script: str, args: list[str], what: str) -> dict:
    """`python script *args` in a fresh process (its own thread pools): its last stdout line,
    parsed as JSON; a failure raises with `what` and the end of its stderr."""
    done = subprocess.run([sys.executable, os.path.abspath(script), *args], capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(impl: str, size: str, a) -> float:
    """Best step seconds of `impl` measured in a fresh Python process."""
    return run_fresh(__file__, ["--child", impl, "--size", size, "--batch", str(a.batch),
                                "--dtype", a.dtype, "--warmup", str(a.warmup),
                                "--repeats", str(a.repeats), "--image", str(a.image)],
                     f"{impl} ViT-{size}")["step_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="S,B")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image", type=int, default=IMAGE, help="frame size (a multiple of 2 patches)")
    p.add_argument("--rounds", type=int, default=2, help="fresh-process rounds per implementation")
    p.add_argument("--impls", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--child", choices=[*IMPLEMENTATIONS, "peak"], help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    impls = a.impls.split(",")
    if impls[0] != "hf" or any(i not in IMPLEMENTATIONS for i in impls):
        raise SystemExit(f"--impls {a.impls}: 'hf' first (the baseline), then any of "
                         f"{list(IMPLEMENTATIONS)[1:]}")
    from internvideo_jax.infra import flops
    from internvideo_jax.models.videomae import VideoMAEPretrain, get_size
    machine = run_fresh(__file__, ["--child", "peak"], "the peak measurement")
    peak = machine["peak"]
    rows = []
    for name in a.sizes.split(","):
        size = get_size(name)
        shape = (FRAMES, a.image, a.image, 3)
        num_masked = VideoMAEPretrain(size, MASK_RATIO).num_masked((1,) + shape)
        num_decoded = VideoMAEPretrain(size, MASK_RATIO, decoder_mask_ratio=DECODER_MASK_RATIO
                                       ).num_decoded((1,) + shape)
        here = [i for i in impls if i != "ours_umt" or name in UMT_SIZES]
        step_flops = {impl: 3 * a.batch * flops.videomae_pretrain_flops(
            size, shape, num_masked, num_decoded if impl == "ours_dual" else None)
            for impl in here if impl != "ours_umt"}
        if "ours_umt" in here:  # the frozen teacher forward only, the student 3x
            step_flops["ours_umt"] = a.batch * umt_task(name, a.image, a.dtype)[
                1].train_flops_per_example()
        best = {impl: float("inf") for impl in here}
        for r in range(a.rounds):
            for impl in (here if r % 2 == 0 else here[::-1]):
                seconds = measure(impl, name, a)
                best[impl] = min(best[impl], seconds)
                print(json.dumps({"size": name, "impl": impl, "round": r, "batch": a.batch,
                                  "dtype": a.dtype, "step_s": round(seconds, 3)}), flush=True)
        result = {impl: {"clips_per_s": a.batch / s, "mfu": step_flops[impl] / s / peak,
                         "gflop_per_clip": step_flops[impl] / a.batch / 1e9}
                  for impl, s in best.items()}
        rows.append((name, result))
    print(f"\npeak: {peak / 1e12:.2f} TFLOP/s ({machine['peak_kind']}) on {machine['kind']}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}; best of {a.rounds} fresh-process rounds")
    others = impls[1:]
    print("| size | batch | dtype | HF clips/s | " + " | ".join(f"{o} clips/s | {o} / HF"
                                                          for o in others)
          + " | HF MFU | " + " | ".join(f"{o} MFU" for o in others) + " |")
    print("|---" * (5 + 3 * len(others)) + "|")
    for name, r in rows:
        h = r["hf"]
        cells = [f"ViT-{name}", str(a.batch), a.dtype, f"{h['clips_per_s']:.3f}"]
        for o in others:
            cells += ([f"{r[o]['clips_per_s']:.3f}", f"{r[o]['clips_per_s'] / h['clips_per_s']:.2f}x"]
                      if o in r else ["n/a", "n/a"])
        cells.append(f"{100 * h['mfu']:.1f}%")
        cells += [f"{100 * r[o]['mfu']:.1f}%" if o in r else "n/a" for o in others]
        print("| " + " | ".join(cells) + " |")
    print("\ntraining GFLOP per clip (3x forward; UMT: the teacher's forward once):")
    print("| size | " + " | ".join(impls) + " |")
    print("|---" * (1 + len(impls)) + "|")
    for name, r in rows:
        print(f"| ViT-{name} | " + " | ".join(f"{r[i]['gflop_per_clip']:.1f}" if i in r else "n/a"
                                               for i in impls) + " |")


if __name__ == "__main__":
    main()
