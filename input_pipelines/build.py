r"""Pack a folder of videos into a TFDS ArrayRecord dataset, or validate every video before training.

  # pack: one --split per annotation file; optional re-encoding to a short side
  python -m input_pipelines.build pack --name k400 --format list --video-root /data/k400/videos \
      --split train=/data/k400/train.txt --split validation=/data/k400/val.txt \
      --out /data/tfds [--short-side 320]
  # -> /data/tfds/video_folder/k400/1.0.0; train with --config.data.dataset=<that directory>

  # validate: open every video, decode a few frames, report unreadable or suspicious files
  python -m input_pipelines.build validate --format list --video-root /data/k400/videos \
      --annotations /data/k400/train.txt --report bad_videos.tsv

Formats: list, csv, ssv2 (with --labels), captions; see input_pipelines/annotations.py.
Packed features: video (encoded bytes), label (int, -1 if none), caption (captions joined by
newlines), video_id, path, num_frames, fps, duration (probed). Unreadable videos are left out of the
packed dataset and listed in <dataset dir>/skipped.tsv.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import av
import numpy as np
import tensorflow_datasets as tfds

from input_pipelines import annotations, decode, robust, synthetic_videos


def reencode_short_side(data: bytes, short_side: int) -> bytes:
    """Re-encode a video (H.264 mp4, same frame rate) so its shorter side is `short_side` pixels.

    Rotation metadata is applied to the pixels (the output is stored upright, without it).
    """
    with av.open(io.BytesIO(data)) as src:
        s = src.streams.video[0]
        fps = s.average_rate or 25
        frames, size = [], None
        for f in src.decode(s):
            if size is None:
                w, h = decode.display_size(f)
                scale = short_side / min(w, h)
                size = int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2
            frames.append(decode.to_rgb(f, *size, interpolation="AREA"))
    if not frames:
        raise decode.DecodeError("no frame could be decoded")
    frames = np.stack(frames)  # (T, H, W, 3)
    return synthetic_videos.encode_mp4(frames, fps=fps, crf=23)


def check_video(data: bytes, frames_to_decode: int = 4) -> dict:
    """Probe and decode the first frames; raises decode.DecodeError when unreadable."""
    info = decode.probe(data)
    n = min(frames_to_decode, info["num_frames"])
    decode.decode_frames(data, np.arange(n))
    return info


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of videos + annotation files, packed by `python -m input_pipelines.build pack`."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, splits: dict, fmt: str, video_root: str, labels: str | None,
                 short_side: int, **kwargs):
        self._splits, self._fmt, self._root = splits, fmt, video_root
        self._labels, self._short_side = labels, short_side
        self.skipped: list[tuple[str, str]] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=FEATURES)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(path) for name, path in self._splits.items()}

    def _generate_examples(self, annotation_path: str):
        for r in annotations.read(annotation_path, self._fmt, self._labels):
            path = r["path"] if os.path.isabs(r["path"]) else os.path.join(self._root, r["path"])
            try:
                with open(path, "rb") as f:
                    data = f.read()
                info = check_video(data)  # before re-encoding: unreadable files fail here
                if self._short_side:
                    data = reencode_short_side(data, self._short_side)
                    info = check_video(data)
            except robust.LOAD_ERRORS as e:
                self.skipped.append((path, f"{type(e).__name__}: {e}"))
                continue
            yield path, {"video": data, "label": r["label"], "caption": "\n".join(r["captions"]),
                         "video_id": r["video_id"], "path": path,
                         "num_frames": info["num_frames"], "fps": info["fps"],
                         "duration": info["duration"]}


FEATURES = tfds.features.FeaturesDict({
    "video": tfds.features.Tensor(shape=(), dtype=np.object_),
    "label": tfds.features.Scalar(dtype=np.int64),
    "caption": tfds.features.Text(),
    "video_id": tfds.features.Text(),
    "path": tfds.features.Text(),
    "num_frames": tfds.features.Scalar(dtype=np.int32),
    "fps": tfds.features.Scalar(dtype=np.float32),
    "duration": tfds.features.Scalar(dtype=np.float32),
})


def pack(args) -> str:
    splits = dict(s.split("=", 1) for s in args.split)
    builder = VideoFolder(splits=splits, fmt=args.format, video_root=args.video_root,
                          labels=args.labels, short_side=args.short_side,
                          config=tfds.core.BuilderConfig(name=args.name), data_dir=args.out,
                          file_format="array_record")
    builder.download_and_prepare()
    out_dir = builder.data_dir
    with open(os.path.join(out_dir, "skipped.tsv"), "w") as f:
        f.writelines(f"{p}\t{why}\n" for p, why in builder.skipped)
    counts = {name: builder.info.splits[name].num_examples for name in splits}
    print(f"packed {counts} into {out_dir}; {len(builder.skipped)} unreadable videos skipped"
          + (f" (listed in {out_dir}/skipped.tsv)" if builder.skipped else ""))
    return out_dir


def validate(args) -> int:
    records = annotations.read(args.annotations, args.format, args.labels)
    root = args.video_root or os.path.dirname(os.path.abspath(args.annotations))
    bad = []
    for r in records:
        path = r["path"] if os.path.isabs(r["path"]) else os.path.join(root, r["path"])
        try:
            with open(path, "rb") as f:
                info = check_video(f.read())
        except robust.LOAD_ERRORS as e:
            bad.append((path, "unreadable", f"{type(e).__name__}: {e}"))
            continue
        if info["num_frames"] < args.min_frames:
            bad.append((path, "suspicious", f"only {info['num_frames']} frames"))
    with open(args.report, "w") as f:
        f.write("path\tstatus\treason\n")
        f.writelines(f"{p}\t{s}\t{why}\n" for p, s, why in bad)
    unreadable = sum(s == "unreadable" for _, s, _ in bad)
    print(f"{len(records)} videos: {unreadable} unreadable, {len(bad) - unreadable} suspicious; "
          f"report in {args.report}")
    return 1 if unreadable else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m input_pipelines.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("pack", "validate"):
        s = sub.add_parser(name)
        s.add_argument("--format", required=True, choices=annotations.FORMATS)
        s.add_argument("--video-root", default="", help="directory relative paths start from")
        s.add_argument("--labels", default=None, help="label map (ssv2 JSON, or class names)")
    pk = sub.choices["pack"]
    pk.add_argument("--name", required=True, help="dataset config name, e.g. k400")
    pk.add_argument("--split", action="append", required=True, help="NAME=ANNOTATION_FILE")
    pk.add_argument("--out", required=True, help="TFDS data dir to write into")
    pk.add_argument("--short-side", type=int, default=0, help="re-encode to this short side")
    va = sub.choices["validate"]
    va.add_argument("--annotations", required=True)
    va.add_argument("--report", default="video_report.tsv")
    va.add_argument("--min-frames", type=int, default=16, help="fewer frames is 'suspicious'")
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args)
        return 0
    return validate(args)


if __name__ == "__main__":
    sys.exit(main())
