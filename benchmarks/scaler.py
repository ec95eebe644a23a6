r"""Which swscale filter transforms.scaled_crop should use: error against the reference crop +
Pillow resize, and cost per clip, for every filter PyAV's VideoReformatter accepts and "auto".

Content (no downloads): synthetic natural-image-like frames, `natural_frames` below: 1/f ("pink")
noise, luminance-dominated colour, with filled ellipses and polygons (sharp edges), thin lines and
text of several sizes, blurred by a 1.2 px Gaussian (camera optics), panning 1-2 px a frame;
encoded as H.264 yuv420p (CRF 20) at 1280x720 and 426x320 (Kinetics' 320-pixel short side) and
decoded with PyAV. Its detail is calibrated so that FAST_BILINEAR's error at 720p lands near
issue 18's measurement on real 720p content (13.8 grey levels at 64 px, 5.8 at 224 px).

Reference: each decoded frame converted to RGB at full size (decode.to_rgb(frame)), cropped, then
PIL Image.resize((S, S), Image.BILINEAR) (VideoMAE's GroupMultiScaleCrop; Pillow's resize is
antialiased: its filter support widens with the downscale factor). Error = mean absolute
difference in grey levels over all pixels and channels.

  1. By scale factor r = S / crop side (square crops at random positions, S = 64-224): the filter
     alone, against Pillow resizing the box the scaled frame actually covers (the window starts on
     a whole pixel of the scaled frame, so it is offset from the requested box by up to half an
     output pixel). The thresholds of transforms.crop_interpolation are chosen on this table.
  2. By output size, boxes of VideoMAE's multi-scale crop (transforms.multi_scale_crop_box) and of
     the random resized crop (random_resized_crop_box, area 0.08-1): the total error against the
     exact crop + resize (filter + sub-pixel offset + border).
  3. Evaluation views (short side resized to S, centre crop, as builders.EvalViews): against Pillow,
     and, with torch installed, against a non-antialiased bilinear resize (torch interpolate,
     antialias=False; what VideoMAE's test-time video_transforms.Resize computes with
     cv2.INTER_LINEAR on its numpy frames).

Time: scaled_crop of a 16-frame clip (decode excluded; decoding the 16 frames is printed for
scale), 426x320 and 1280x720 sources, to 224 and 64, one multi-scale crop box drawn per round and
shared by every variant of that round. The variants are interleaved within each round (order
reversed on alternate rounds) so that load from other processes hits them alike; medians over the
rounds, and the ratio to FAST_BILINEAR (the named baseline) as the median of per-round ratios.

  python benchmarks/scaler.py             # ~75 s on 2 cores
  python benchmarks/scaler.py --quick     # fewer boxes and rounds, ~30 s

Prints markdown tables (the ones in docs/benchmarks.md, "Crop scaler").
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipelines import decode, synthetic_videos, transforms  # noqa: E402

FILTERS = ("FAST_BILINEAR", "BILINEAR", "BICUBIC", "X", "POINT", "AREA", "BICUBLIN", "GAUSS",
           "SINC", "LANCZOS", "SPLINE")
VARIANTS = FILTERS + ("auto",)
SOURCES = ((1280, 720), (426, 320))
SIZES = (64, 112, 160, 224)


def pink_noise(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 1) luminance and (H, W, 3) colour noise with a 1/f amplitude spectrum, unit std."""
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = np.inf  # no DC
    chans = [np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f,
                           s=(height, width)) for _ in range(4)]
    lum, rgb = chans[0][..., None], np.stack(chans[1:], -1)
    return (lum - lum.mean()) / lum.std(), (rgb - rgb.mean()) / rgb.std()


def natural_frames(rng: np.random.Generator, width: int, height: int, num_frames: int,
                   contrast: float = 28.0, blur: float = 1.2, objects: int = 40) -> np.ndarray:
    """(T, H, W, 3) uint8 natural-image-like frames: pink noise + sharp shapes, lines and text,
    optics blur, and a pan of (1, 2) pixels a frame. Sizes of shapes and text scale with height."""
    pad = 2 * num_frames
    big_h, big_w = height + pad, width + pad
    lum, chroma = pink_noise(rng, big_h, big_w)
    im = Image.fromarray(np.clip(120 + contrast * lum + 0.4 * contrast * chroma, 0, 255)
                         .astype(np.uint8))
    draw = ImageDraw.Draw(im)
    s = height / 720
    for _ in range(objects):
        x0, y0 = float(rng.uniform(0, big_w)), float(rng.uniform(0, big_h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(4))
        if kind == 0:
            a, b = rng.uniform(10, 150, 2) * s
            draw.ellipse([x0, y0, x0 + a, y0 + b], fill=colour)
        elif kind == 1:
            draw.polygon([(x0 + float(dx), y0 + float(dy))
                          for dx, dy in rng.uniform(-120, 120, (5, 2)) * s], fill=colour)
        elif kind == 2:
            draw.line([x0, y0, float(rng.uniform(0, big_w)), float(rng.uniform(0, big_h))],
                      fill=colour, width=int(rng.integers(1, 4)))
        else:
            font = ImageFont.load_default(size=max(8, int(rng.uniform(12, 48) * s)))
            draw.text((x0, y0), "".join(chr(c) for c in rng.integers(65, 91, 10)), fill=colour,
                      font=font)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(im)
    return np.stack([arr[2 * t:2 * t + height, t:t + width] for t in range(num_frames)])


def encoded(width: int, height: int, num_frames: int, seed: int) -> bytes:
    """natural_frames encoded as H.264 yuv420p, CRF 20, in an mp4."""
    rng = np.random.default_rng([seed, width, height])
    return synthetic_videos.encode_mp4(natural_frames(rng, width, height, num_frames), crf=20)


def decoded(width: int, height: int, num_frames: int, seed: int) -> list[av.VideoFrame]:
    """The frames of `encoded`, decoded with PyAV."""
    with av.open(io.BytesIO(encoded(width, height, num_frames, seed))) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == num_frames:
                break
    return frames


def pil_crop_resize(rgb: np.ndarray, box, size: int) -> np.ndarray:
    """The reference: crop (x, y, w, h), then Pillow BILINEAR resize to size^2 (float64)."""
    x, y, w, h = box
    crop = Image.fromarray(rgb).crop((x, y, x + w, y + h))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), np.float64)


def covered_box(width: int, height: int, box, size: int) -> tuple[float, ...]:
    """(left, top, right, bottom) in source pixels of the window scaled_crop actually returns."""
    x, y, w, h = box
    sw, sh = max(size, round(width * size / w)), max(size, round(height * size / h))
    cx, cy = min(round(x * size / w), sw - size), min(round(y * size / h), sh - size)
    return (cx * width / sw, cy * height / sh, (cx + size) * width / sw, (cy + size) * height / sh)


def mae(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref).mean())


def error_by_scale(sources, boxes_per: int, variants=("FAST_BILINEAR", "BILINEAR", "AREA",
                                                       "GAUSS", "auto")) -> list[str]:
    rs = (0.09, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.05, 1.2, 1.5,
          2.0, 2.5)
    rng = np.random.default_rng(0)
    lines = ["| r = S / side | " + " | ".join(variants) + " | samples |",
             "|---" * (len(variants) + 2) + "|"]
    for r in rs:
        errs = {v: [] for v in variants}
        for size in SIZES:
            side = int(round(size / r))
            for frames, full in sources:
                width, height = decode.display_size(frames[0])
                if side > height:
                    continue
                for _ in range(boxes_per):
                    x = int(rng.integers(0, width - side + 1))
                    y = int(rng.integers(0, height - side + 1))
                    box = (x, y, side, side)
                    covered = covered_box(width, height, box, size)
                    refs = [np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR,
                                                                 box=covered), np.float64)
                            for f in full]
                    for v in variants:
                        out = transforms.scaled_crop(frames, box, size, v)
                        errs[v] += [mae(o, ref) for o, ref in zip(out, refs)]
        n = len(errs[variants[0]])
        lines.append(f"| {r} | " + " | ".join(f"{np.mean(errs[v]):.2f}" for v in variants)
                     + f" | {n} |")
    return lines


def error_by_size(by_source, boxes_per: int) -> list[str]:
    lines = []
    for family in ("multi-scale crop", "random resized crop"):
        cols = [(w, h, s) for (w, h) in SOURCES for s in SIZES]
        lines += [f"\n{family}: mean abs error (grey levels) against crop + Pillow BILINEAR resize",
                  "", "| scaler | " + " | ".join(f"{h}p->{s}" for _, h, s in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        errs = {v: [] for v in VARIANTS}
        for w, h, s in cols:
            rng = np.random.default_rng([w, s])
            e = {v: [] for v in VARIANTS}
            for frames, full in by_source[(w, h)]:
                for _ in range(boxes_per):
                    if family == "multi-scale crop":
                        box = transforms.multi_scale_crop_box(w, h, s, rng)
                    else:
                        box = transforms.random_resized_crop_box(w, h, rng)
                    refs = [pil_crop_resize(f, box, s) for f in full]
                    for v in VARIANTS:
                        out = transforms.scaled_crop(frames, box, s, v)
                        e[v] += [mae(o, ref) for o, ref in zip(out, refs)]
            for v in VARIANTS:
                errs[v].append(np.mean(e[v]))
        for v in VARIANTS:
            lines.append(f"| {v} | " + " | ".join(f"{x:.2f}" for x in errs[v]) + " |")
    return lines


def error_eval_views(by_source) -> list[str]:
    try:
        import torch
    except ImportError:
        torch = None
    variants = ("FAST_BILINEAR", "BILINEAR", "AREA", "auto")
    lines = ["\nevaluation views (short side -> S, centre crop): mean abs error against Pillow "
             "BILINEAR resize" + (" / against non-antialiased bilinear (torch, = cv2.INTER_LINEAR)"
                                  if torch else ""), "",
             "| view | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for (w, h), sources in by_source.items():
        for s in (224, 112):
            rw, rh = transforms.short_side_size(w, h, s)
            x, y, _, _ = transforms.three_crop_boxes(rw, rh, s)[1]
            box = (x * w / rw, y * h / rh, s * w / rw, s * h / rh)  # as builders.EvalViews
            e_pil, e_lin = {v: [] for v in variants}, {v: [] for v in variants}
            for frames, full in sources:
                for t, f in enumerate(full):
                    ref = np.asarray(Image.fromarray(f).resize((rw, rh), Image.BILINEAR),
                                     np.float64)[y:y + s, x:x + s]
                    if torch:
                        lin = torch.nn.functional.interpolate(
                            torch.from_numpy(f).permute(2, 0, 1)[None].double(), size=(rh, rw),
                            mode="bilinear", align_corners=False, antialias=False)
                        lin = lin[0].permute(1, 2, 0).round().clamp(0, 255).numpy()[y:y + s,
                                                                                     x:x + s]
                    for v in variants:
                        out = transforms.scaled_crop([frames[t]], box, s, v)[0]
                        e_pil[v].append(mae(out, ref))
                        if torch:
                            e_lin[v].append(mae(out, lin))
            cells = [f"{np.mean(e_pil[v]):.2f}" + (f" / {np.mean(e_lin[v]):.2f}" if torch else "")
                     for v in variants]
            lines.append(f"| {w}x{h} -> {s} (r={s / min(w, h):.2f}) | " + " | ".join(cells) + " |")
    return lines


def timing(rounds: int) -> list[str]:
    lines = ["\ntime per 16-frame clip (scaled_crop only; ms, median over rounds) and ratio to "
             "FAST_BILINEAR (median of per-round ratios)", ""]
    configs = [(w, h, s) for (w, h) in ((426, 320), (1280, 720)) for s in (224, 64)]
    lines += ["| scaler | " + " | ".join(f"{h}p->{s}" for _, h, s in configs) + " |",
              "|---" * (len(configs) + 1) + "|"]
    cells = {v: [] for v in VARIANTS}
    decode_ms = {}
    for w, h, s in configs:
        frames = decoded(w, h, 16, seed=7)
        if (w, h) not in decode_ms:
            data = encoded(w, h, 16, seed=7)
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                with av.open(io.BytesIO(data)) as c:
                    n = sum(1 for _ in c.decode(video=0))
                ts.append((time.perf_counter() - t0) * 1e3)
            decode_ms[(w, h)] = (np.median(ts), n)
        rng = np.random.default_rng([w, s])
        for v in VARIANTS:  # warm-up: each filter's converter context once
            transforms.scaled_crop(frames, (0, 0, h, h), s, v)
        times = {v: [] for v in VARIANTS}
        for r in range(rounds):
            box = transforms.multi_scale_crop_box(w, h, s, rng)
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                t0 = time.perf_counter()
                transforms.scaled_crop(frames, box, s, v)
                times[v].append(time.perf_counter() - t0)
        base = np.array(times["FAST_BILINEAR"])
        for v in VARIANTS:
            t = np.array(times[v])
            cells[v].append(f"{np.median(t) * 1e3:.1f} ({np.median(t / base):.2f}x)")
    for v in VARIANTS:
        lines.append(f"| {v} | " + " | ".join(cells[v]) + " |")
    lines.append("")
    for (w, h), (ms, n) in decode_ms.items():
        lines.append(f"for scale: decoding those {n} frames ({w}x{h}, PyAV) "
                     f"takes {ms:.1f} ms")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer boxes and rounds")
    p.add_argument("--rounds", type=int, default=0, help="timing rounds (default 31, quick 7)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: scale,size,eval,time")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    boxes = 2 if args.quick else 4
    rounds = args.rounds or (7 if args.quick else 31)
    av.logging.set_level(av.logging.ERROR)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, PyAV {av.__version__} "
          f"(libswscale {'.'.join(map(str, av.library_versions['libswscale']))}), "
          f"Pillow {Image.__version__}")
    print(f"# auto: {transforms.crop_interpolation.__doc__.strip().splitlines()[0]}; "
          f"FAST_BILINEAR_MIN_SCALE = {transforms.FAST_BILINEAR_MIN_SCALE}")
    by_source = {}
    for w, h in SOURCES:  # two scenes per source size, two frames each
        by_source[(w, h)] = []
        for seed in (0, 1):
            frames = decoded(w, h, 2, seed)
            by_source[(w, h)].append((frames, [decode.to_rgb(f) for f in frames]))
    if "scale" not in skip:
        print("\nby scale factor: filter-only mean abs error (grey levels) against Pillow BILINEAR "
              "resize of the covered box\n")
        print("\n".join(error_by_scale([s for v in by_source.values() for s in v], boxes // 2)),
              flush=True)
    if "size" not in skip:
        print("\n".join(error_by_size(by_source, boxes)), flush=True)
    if "eval" not in skip:
        print("\n".join(error_eval_views(by_source)), flush=True)
    if "time" not in skip:
        print("\n".join(timing(rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
