r"""Input pipeline throughput: our grain + PyAV pipeline against a reference-style loader.

Both read the same H.264 files (generated here: 320x426, 25 fps, 10 s = 250 frames like a Kinetics
clip, x264 default keyframe interval; --frames to change), make the same clip
(16 frames, stride 4, VideoMAE multi-scale crop to 224x224, tube mask 90%), with the same number of
worker processes and the same batch size, in one run.

  ours      input_pipelines.builders.pretrain_dataset: grain MapDataset -> SkipBadVideos(PretrainClip)
            -> batch -> mp_prefetch(workers);
            PyAV seek + decode of the needed span, colour conversion and scaling in one swscale
            pass, crop by slicing, uint8 out (normalisation happens on the accelerator).
  baseline  written the way the reference VideoMAE code loads video: a torch Dataset whose
            __getitem__ opens decord.VideoReader, get_batch(indices), then per-frame PIL
            multi-scale crop + resize, ToTensor-style float conversion and mean/std normalisation,
            in a torch DataLoader(num_workers=workers).
  ours k=4  repeated augmentation: one decode, 4 augmented views (clips/s counts views).

  pip install torch==2.13.0 decord2==3.4.0 pillow==13.0.0   # the benchmark extra
  python benchmarks/input_pipeline.py --workers 2 --batches 30
  taskset -c 0 python benchmarks/input_pipeline.py --clip-cost 8   # ms per clip, scaler cost
Prints one JSON line per loader and a markdown table for docs/benchmarks.md (--clip-cost: median
and min ms per clip of each crop scaler, interleaved rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipelines import synthetic_videos  # noqa: E402

CLIP, STRIDE, CROP, BATCH = 16, 4, 224, 8
GRID = (CLIP // 2, CROP // 16, CROP // 16)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_videos(folder: str, count: int, frames: int) -> str:
    """`count` H.264 mp4 files of 426x320 (a 320-pixel short side), and a `path label` list."""
    lines = []
    for i in range(count):
        path = os.path.join(folder, f"v{i:03d}_{frames}f.mp4")
        if not os.path.exists(path):
            rng = np.random.default_rng([123, i])
            spec = synthetic_videos.sample_scene(rng, 426, frames)
            video = synthetic_videos.render(spec, 426, frames, rng)[:, 53:373]  # (T, 320, 426, 3)
            with open(path, "wb") as f:
                f.write(synthetic_videos.encode_mp4(video, fps=25, crf=23))
        lines.append(f"{path} {i % 8}")
    listing = os.path.join(folder, "list.txt")
    with open(listing, "w") as f:
        f.write("\n".join(lines) + "\n")
    return listing


def run_ours(listing: str, workers: int, batches: int, repeats: int) -> float:
    from absl import flags

    from experiments.videomae_pretrain import get_config
    from input_pipelines import builders
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    data = get_config("tiny").data  # every data key at the training default
    data.update(dataset=f"list:{listing}", num_frames=CLIP, stride=STRIDE, crop_size=CROP,
                flip=False, num_workers=workers, num_threads=1, prefetch_batches=2,
                num_repeats=repeats)
    ds, _ = builders.pretrain_dataset(data, seed=0, local_batch=BATCH, token_grid=GRID,
                                      mask_ratio=0.9)
    return _time_batches(iter(ds), batches, lambda b: b["video"].shape[0])


def run_baseline(listing: str, workers: int, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(_ReferenceStyleDataset(listing), batch_size=BATCH, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    it = iter(_forever(loader))
    del torch
    return _time_batches(it, batches, lambda b: b[0].shape[0])


def _forever(loader):
    while True:
        yield from loader


def _time_batches(it, batches: int, size_fn) -> float:
    for _ in range(3):  # warm up: workers started, first files opened
        next(it)
    t0 = time.perf_counter()
    clips = sum(size_fn(next(it)) for _ in range(batches))
    return clips / (time.perf_counter() - t0)


class _ReferenceStyleDataset:
    """decord + PIL + torch transforms, the way the reference VideoMAE pretraining loads a clip."""

    def __init__(self, listing: str):
        with open(listing) as f:
            self.items = [line.rsplit(None, 1) for line in f if line.strip()]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import decord
        import torch
        from PIL import Image

        from input_pipelines.masking import tube_mask
        from input_pipelines.transforms import multi_scale_crop_box
        rng = np.random.default_rng()
        vr = decord.VideoReader(self.items[index][0], num_threads=1, ctx=decord.cpu(0))
        n = len(vr)
        span = (CLIP - 1) * STRIDE + 1
        start = int(rng.integers(0, max(n - span, 0) + 1))
        idx = np.minimum(start + STRIDE * np.arange(CLIP), n - 1)
        frames = vr.get_batch(list(idx)).asnumpy()  # (T, H, W, 3) uint8
        images = [Image.fromarray(f) for f in frames]  # the reference works on PIL images
        x, y, w, h = multi_scale_crop_box(images[0].width, images[0].height, CROP, rng)
        images = [im.crop((x, y, x + w, y + h)).resize((CROP, CROP), Image.BILINEAR)
                  for im in images]
        video = torch.from_numpy(np.stack([np.asarray(im) for im in images]))
        video = video.permute(0, 3, 1, 2).float().div(255.0)  # (T, C, H, W) in [0, 1]
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        video = ((video - mean) / std).permute(1, 0, 2, 3)  # (C, T, H, W), the model's layout
        return video, torch.from_numpy(tube_mask(GRID, 0.9, rng))


def clip_cost(listing: str, rounds: int) -> dict[str, list[float]]:
    """ms per PretrainClip in this process (one core), with the default crop scaler ("auto",
    transforms.crop_interpolation) and with the old FAST_BILINEAR forced, interleaved over rounds
    so that the host's drift hits both alike."""
    from input_pipelines import builders, transforms
    with open(listing) as f:
        datas = [open(line.rsplit(None, 1)[0], "rb").read() for line in f if line.strip()][:12]
    clip = builders.PretrainClip(CLIP, STRIDE, CROP, False, GRID, 0.9)
    chosen = transforms.crop_interpolation
    variants = {"auto (default)": chosen, "FAST_BILINEAR (old default)":
                lambda *a: "FAST_BILINEAR"}
    out = {name: [] for name in variants}
    for _ in range(rounds):
        for name, rule in variants.items():
            transforms.crop_interpolation = rule
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for data in datas:
                clip({"video": data, "num_frames": 0}, rng)
            out[name].append((time.perf_counter() - t0) / len(datas) * 1e3)
    transforms.crop_interpolation = chosen
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--frames", type=int, default=250, help="frames per generated video")
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "ivj_bench_videos"))
    p.add_argument("--clip-cost", type=int, default=0, metavar="ROUNDS",
                   help="instead: ms per clip in one process, crop scaler auto vs FAST_BILINEAR")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    listing = make_videos(args.dir, args.videos, args.frames)
    if args.clip_cost:
        for name, ms in clip_cost(listing, args.clip_cost).items():
            print(f"| {name} | {np.median(ms):.1f} | {min(ms):.1f} |")
        return
    results = {
        "baseline (decord + PIL + torch DataLoader)": run_baseline(listing, args.workers,
                                                                    args.batches),
        "ours (grain + PyAV), k=1": run_ours(listing, args.workers, args.batches, 1),
        "ours (grain + PyAV), repeated aug k=4": run_ours(listing, args.workers, args.batches, 4),
    }
    base = results["baseline (decord + PIL + torch DataLoader)"]
    k1 = results["ours (grain + PyAV), k=1"]
    for name, clips_per_s in results.items():
        print(json.dumps({"loader": name, "clips_per_s": round(clips_per_s, 2),
                          "vs_baseline": round(clips_per_s / base, 2)}))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"workers {args.workers}, batch {BATCH}, {args.batches} batches timed, "
          f"{args.videos} videos of {args.frames} frames")
    print("| loader | clips/s | vs baseline | vs ours k=1 |\n|---|---|---|---|")
    for name, clips_per_s in results.items():
        print(f"| {name} | {clips_per_s:.1f} | {clips_per_s / base:.2f}x | "
              f"{clips_per_s / k1:.2f}x |")
    os._exit(0)  # grain worker processes and torch workers: skip slow interpreter teardown


if __name__ == "__main__":
    main()
