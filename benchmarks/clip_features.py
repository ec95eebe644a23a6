r"""Clip-feature extraction over untrimmed videos: ours against a reference-style extractor.

Both run the same VideoMAE classifier (random weights made in PyTorch, imported into JAX with
`python -m internvideo_jax.convert import`: the user's path) over the same H.264 files (generated
here: 25 fps, --seconds long, --height x 4/3 pixels, x264 default keyframe interval), with the
reference's windows: 16 consecutive frames, a clip every --clip-stride frames, each frame resized
to --resolution squared without a crop, the pooled feature fc_norm(mean of tokens).

  ours      python -m internvideo_jax.main --mode=extract_clip_features (offline.py): one forward
            PyAV decode per video, colour conversion and resize in one swscale pass, clips batched
            across videos (--batch) into one jitted function, uint8 to the device.
  baseline  written as VideoMAEv2's extract_tad_feature.py: decord.VideoReader, get_batch of each
            clip's 16 frames, float tensor, torch bilinear resize, normalisation, the PyTorch
            model on one clip at a time (torch.no_grad, all cores).

  pip install torch==2.13.0 decord2==3.4.0   # the benchmark extra
  python benchmarks/clip_features.py --size S --resolution 112 --videos 3 --seconds 8
Prints one JSON line per extractor (clips/s, wall seconds, compile excluded for ours by a warm-up
run on one video) and how far apart their features are, and a markdown row for
docs/benchmarks.md.
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

SIZES = {"S": dict(dim=384, depth=12, heads=6), "B": dict(dim=768, depth=12, heads=12)}
CLIP = 16


def make_videos(root: str, count: int, seconds: float, height: int) -> list[str]:
    """`count` mp4 files of moving shapes, `seconds` long at 25 fps; their paths."""
    paths = []
    width = height * 4 // 3 // 2 * 2
    for i in range(count):
        n = int(seconds * 25)
        rng = np.random.default_rng([5, i])
        spec = synthetic_videos.sample_scene(rng, height, n)
        frames = synthetic_videos.render(spec, height, n, rng)  # (n, h, h, 3)
        frames = np.concatenate([frames, frames[:, :, :width - height]], axis=2)  # 4:3
        path = os.path.join(root, f"video_{i}.mp4")
        with open(path, "wb") as f:
            f.write(synthetic_videos.encode_mp4(frames, fps=25, keyframe_interval=250))
        paths.append(path)
    return paths


def torch_model(size: str, resolution: int):
    import torch
    from internvideo_jax.torch_models.videomae import VideoMAEClassifier
    torch.manual_seed(0)
    model = VideoMAEClassifier(**SIZES[size], patch=16, tubelet=2, num_frames=CLIP,
                               image_size=resolution, num_classes=400).eval()
    return model


def reference_extract(model, paths: list[str], resolution: int, stride: int) -> tuple[dict, int]:
    """{path: (N, D) features}, clips: the reference extractor's loop."""
    import decord
    import torch
    import torch.nn.functional as F
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    out, clips = {}, 0
    with torch.no_grad():
        for path in paths:
            vr = decord.VideoReader(path, num_threads=1)
            feats = []
            for start in range(0, len(vr) - CLIP + 1, stride):
                data = vr.get_batch(np.arange(start, start + CLIP)).asnumpy()  # (T, H, W, 3)
                x = torch.from_numpy(data).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
                x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                  align_corners=False)
                x = ((x.permute(1, 0, 2, 3) - mean) / std).unsqueeze(0)  # (1, 3, T, S, S)
                tokens = model.tokens(x)
                feats.append(model.fc_norm(tokens.mean(1))[0].numpy())
                clips += 1
            out[path] = np.stack(feats)
    return out, clips


def ours_config(list_file: str, init_from: str, resolution: int, stride: int, batch: int,
                data_dir: str):
    from experiments.finetune import get_config
    c = get_config("vit_b_k400")
    c.unlock()
    c.model.update(size="init_from", num_classes=400, dtype="float32")
    c.data.update(dataset=f"list:{list_file}", num_frames=CLIP, crop_size=resolution,
                  data_dir=data_dir, num_workers=0)
    c.init_from = init_from
    c.features.update(clip_frames=CLIP, frame_step=1, clip_stride=stride, size=resolution,
                      batch_size=batch)
    return c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="S", choices=sorted(SIZES))
    p.add_argument("--resolution", type=int, default=112)
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--clip-stride", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()

    import jax
    import torch
    from internvideo_jax import offline
    from internvideo_jax.infra.xla_cache import enable_compilation_cache
    from internvideo_jax.localization import features
    enable_compilation_cache()
    root = tempfile.mkdtemp(prefix="clip_features_bench_")
    paths = make_videos(root, args.videos, args.seconds, args.height)
    with open(os.path.join(root, "all.txt"), "w") as f:
        f.writelines(f"{os.path.basename(q)} 0\n" for q in paths)
    with open(os.path.join(root, "warm.txt"), "w") as f:
        f.write(f"{os.path.basename(paths[0])} 0\n")

    model = torch_model(args.size, args.resolution)
    torch.save({"model": model.state_dict()}, os.path.join(root, "model.pth"))
    import subprocess
    subprocess.run([sys.executable, "-m", "internvideo_jax.convert", "import", "--src",
                    os.path.join(root, "model.pth"), "--model", "videomae_classifier",
                    "--frames", str(CLIP), "--image-size", str(args.resolution), "--out",
                    os.path.join(root, "imported")], check=True, capture_output=True)

    rows = []
    # ours: a warm-up run on one video compiles; the timed run reads every video
    offline.extract_clip_features(
        ours_config(os.path.join(root, "warm.txt"), os.path.join(root, "imported"),
                    args.resolution, args.clip_stride, args.batch, root),
        os.path.join(root, "warm"))
    start = time.perf_counter()
    offline.extract_clip_features(
        ours_config(os.path.join(root, "all.txt"), os.path.join(root, "imported"),
                    args.resolution, args.clip_stride, args.batch, root),
        os.path.join(root, "ours"))
    ours_s = time.perf_counter() - start
    ours = {}
    for i, path in enumerate(paths):
        with np.load(features.part_path(os.path.join(root, "ours"), "train", i)) as z:
            ours[path] = z["features"]
    clips = sum(len(v) for v in ours.values())
    rows.append({"extractor": f"ours (PyAV + JAX, batch {args.batch})", "clips": clips,
                 "wall_s": round(ours_s, 2), "clips_per_s": round(clips / ours_s, 2)})

    torch.set_num_threads(os.cpu_count())
    start = time.perf_counter()
    ref, ref_clips = reference_extract(model, paths, args.resolution, args.clip_stride)
    ref_s = time.perf_counter() - start
    rows.append({"extractor": "reference-style (decord + PyTorch, 1 clip)", "clips": ref_clips,
                 "wall_s": round(ref_s, 2), "clips_per_s": round(ref_clips / ref_s, 2)})
    assert ref_clips == clips, (ref_clips, clips)
    diff = max(float(np.abs(ours[q] - ref[q]).max()) for q in paths)
    cos = min(float(np.min(np.sum(ours[q] * ref[q], 1) / np.linalg.norm(ours[q], axis=1)
                           / np.linalg.norm(ref[q], axis=1))) for q in paths)
    for r in rows:
        print(json.dumps(r))
    print(json.dumps({"max_abs_feature_difference": diff, "min_cosine": cos,
                      "note": "the resizes differ (swscale vs torch bilinear)"}))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}"
    print(f"\n| machine | encoder | videos x s | ours clips/s | reference clips/s | speed-up |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {machine} | ViT-{args.size} {CLIP}x{args.resolution}^2 | {args.videos} x "
          f"{args.seconds:g} | {rows[0]['clips_per_s']} | {rows[1]['clips_per_s']} | "
          f"{rows[0]['clips_per_s'] / rows[1]['clips_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
