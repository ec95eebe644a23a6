r"""Pack a folder of videos into a TFDS ArrayRecord dataset, or validate every video before training.

  # pack: one --split per annotation file; optional re-encoding to a short side
  python -m input_pipelines.build pack --name k400 --format list --video-root /data/k400/videos \
      --split train=/data/k400/train.txt --split validation=/data/k400/val.txt \
      --out /data/tfds [--short-side 320]
  # -> /data/tfds/video_folder/k400/1.0.0; train with --config.data.dataset=<that directory>

  # validate: read every video's frame table, decode its first and last frames (--deep: all),
  # report unreadable or suspicious files with the reason
  python -m input_pipelines.build validate --format list --video-root /data/k400/videos \
      --annotations /data/k400/train.txt --report bad_videos.tsv [--deep]

Formats: list, csv, ssv2 (with --labels), captions, qa, mc; see input_pipelines/annotations.py.
Packed features: video (encoded bytes), label (int, -1 if none), caption (captions joined by
newlines), video_id, path, num_frames (frames a player shows, the frame table checked by decoding
its ends, or every frame with --deep), fps, duration; and, by format (FORMAT_FEATURES): qa stores
each video once with its questions (questions: a sequence of {question, answer, question_id,
type} texts; input_pipelines/qa.py makes one example per question), mc the 5 candidates as the
caption lines and answer_index (int32, 0-4). Unreadable videos (empty, not media,
truncated, no video stream, undecodable) are left out of the packed dataset and listed with the
reason in <dataset dir>/skipped.tsv; <dataset dir>/build_info.json records the annotation files
(with their SHA-256) and options it was built from, and packing again with other inputs is refused
unless --overwrite.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

from input_pipelines import annotations, decode, qa, robust, synthetic_videos


def reencode_short_side(data: bytes, short_side: int) -> bytes:
    """Re-encode a video (H.264 mp4) so its shorter side is `short_side` pixels.

    Every frame keeps its presentation time (a variable frame rate stays variable; the first
    shown frame is at 0); rotation metadata is applied to the pixels (the output is stored
    upright, without it); frames an edit list hides are left out, as players leave them out.
    """
    with decode.Video(data) as video:
        s = video.stream
        time_base = video.time_base
        frames, pts, size = [], [], None
        for f in video.frames(np.arange(video.num_frames)):
            if size is None:
                w, h = decode.display_size(f)
                scale = short_side / min(w, h)
                size = int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2
            frames.append(decode.to_rgb(f, *size, interpolation="AREA"))
        pts = video.pts - video.pts[0]
        fps = s.average_rate or s.guessed_rate or 25
    frames = np.stack(frames)  # (T, H, W, 3)
    return synthetic_videos.encode_mp4(frames, fps=fps, crf=23, pts=pts, time_base=time_base)


def read_video_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of videos + annotation files, packed by `python -m input_pipelines.build pack`."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, splits: dict, fmt: str, video_root: str, labels: str | None,
                 short_side: int, deep: bool = False, **kwargs):
        self._splits, self._fmt, self._root = splits, fmt, video_root
        self._labels, self._short_side, self._deep = labels, short_side, deep
        self.skipped: list[tuple[str, str]] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = FORMAT_FEATURES.get(self._fmt, FEATURES)
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(path) for name, path in self._splits.items()}

    def _generate_examples(self, annotation_path: str):
        for r in annotations.read(annotation_path, self._fmt, self._labels):
            path = r["path"] if os.path.isabs(r["path"]) else os.path.join(self._root, r["path"])
            try:
                data = read_video_file(path)
                # The original is checked first, whether or not it is re-encoded: packing with and
                # without --short-side keeps the same videos.
                info = decode.check(data, deep=self._deep)
                if self._short_side:
                    data = reencode_short_side(data, self._short_side)
                    info = decode.check(data, deep=self._deep)
            except robust.LOAD_ERRORS as e:
                self.skipped.append((path, robust.reason(e)))
                continue
            yield path, annotations.example(r, data, path, info["num_frames"], info["fps"],
                                            duration=info["duration"])


def _features(**more) -> tfds.features.FeaturesDict:
    """The packed features of every format, plus `more`."""
    return tfds.features.FeaturesDict({
        "video": tfds.features.Tensor(shape=(), dtype=np.object_),
        "label": tfds.features.Scalar(dtype=np.int64),
        "caption": tfds.features.Text(),
        "video_id": tfds.features.Text(),
        "path": tfds.features.Text(),
        "num_frames": tfds.features.Scalar(dtype=np.int32),
        "fps": tfds.features.Scalar(dtype=np.float32),
        "duration": tfds.features.Scalar(dtype=np.float32),
        **more,
    })


FEATURES = _features()
# The formats whose records carry more (annotations.OPTIONAL_FIELDS). A Sequence of Text fields
# reads back without TensorFlow, column-wise: {'question': [bytes, ...], ...}.
FORMAT_FEATURES = {
    "qa": _features(questions=tfds.features.Sequence({
        name: tfds.features.Text() for name in qa.QUESTION_FIELDS})),
    "mc": _features(answer_index=tfds.features.Scalar(dtype=np.int32)),
}

BUILD_INFO = "build_info.json"  # what a packed dataset was built from, beside dataset_info.json


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_record(args, splits: dict) -> dict:
    """The inputs and options that determine a packed dataset's contents."""
    return {"format": args.format, "video_root": os.path.abspath(args.video_root or "."),
            "labels": os.path.abspath(args.labels) if args.labels else None,
            "labels_sha256": _sha256(args.labels) if args.labels else None,
            "short_side": int(args.short_side), "deep": bool(getattr(args, "deep", False)),
            "splits": {name: {"annotations": os.path.abspath(path), "sha256": _sha256(path)}
                       for name, path in sorted(splits.items())}}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def parse_splits(values: list[str]) -> dict:
    """['train=a.txt', ...] -> {'train': 'a.txt'}; a clear error for anything else."""
    splits = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--split takes NAME=ANNOTATION_FILE (e.g. --split "
                             f"train=/data/train.txt), got {value!r}")
        if name in splits:
            raise UsageError(f"--split {name} is given twice")
        if not os.path.isfile(path):
            raise UsageError(f"--split {name}: annotation file {path} does not exist")
        splits[name] = path
    return splits


class UsageError(ValueError):
    """A command-line mistake: printed as one line, exit status 2."""


def pack(args) -> str:
    """Pack the splits into <out>/video_folder/<name>/1.0.0; returns that directory.

    A dataset already there is reused when it was built from the same inputs and options
    (build_info.json), refused when it was not, and rebuilt with args.overwrite.
    """
    splits = parse_splits(args.split)
    record = build_record(args, splits)
    builder = VideoFolder(splits=splits, fmt=args.format, video_root=args.video_root,
                          labels=args.labels, short_side=args.short_side,
                          deep=getattr(args, "deep", False),
                          config=tfds.core.BuilderConfig(name=args.name), data_dir=args.out,
                          file_format="array_record")
    out_dir = builder.data_dir
    if os.path.exists(os.path.join(out_dir, "dataset_info.json")):
        info_path = os.path.join(out_dir, BUILD_INFO)
        old = json.load(open(info_path)) if os.path.exists(info_path) else {}
        changes = _differences({k: v for k, v in old.items() if k != "skipped"}, record)
        if not changes:
            print(f"{out_dir} is already packed from the same annotations and options; nothing to "
                  f"do (--overwrite rebuilds it)")
            return out_dir
        if not getattr(args, "overwrite", False):
            raise UsageError(
                f"{out_dir} already holds a dataset built from other inputs "
                f"({'; '.join(changes[:6]) if old else 'no build_info.json: unknown inputs'}). "
                f"Pass --overwrite to rebuild it, or pack under another --name or --out.")
        shutil.rmtree(out_dir)
        builder = VideoFolder(splits=splits, fmt=args.format, video_root=args.video_root,
                              labels=args.labels, short_side=args.short_side,
                              deep=getattr(args, "deep", False),
                              config=tfds.core.BuilderConfig(name=args.name), data_dir=args.out,
                              file_format="array_record")
    builder.download_and_prepare()
    with open(os.path.join(out_dir, "skipped.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{p}\t{why}\n" for p, why in builder.skipped)
    with open(os.path.join(out_dir, BUILD_INFO), "w") as f:
        json.dump({**record, "skipped": len(builder.skipped)}, f, indent=1)
    counts = {name: builder.info.splits[name].num_examples for name in splits}
    print(f"packed {counts} into {out_dir}; {len(builder.skipped)} unreadable videos skipped"
          + (f" (listed with the reasons in {out_dir}/skipped.tsv)" if builder.skipped else ""))
    return out_dir


def validate(args) -> int:
    """Check every listed video; write a report (path, status, reason); 1 if any is unreadable.

    Default: each video's frame table (every packet read), its container's declared size and
    frame count, and a decode of its first and last frames; --deep decodes every frame.
    """
    records = annotations.read(args.annotations, args.format, args.labels)
    root = args.video_root or os.path.dirname(os.path.abspath(args.annotations))
    bad = []
    for r in records:
        path = r["path"] if os.path.isabs(r["path"]) else os.path.join(root, r["path"])
        try:
            info = decode.check(read_video_file(path), deep=args.deep)
        except robust.LOAD_ERRORS as e:
            bad.append((path, "unreadable", robust.reason(e)))
            continue
        if info["num_frames"] < args.min_frames:
            bad.append((path, "suspicious", f"only {info['num_frames']} frames"))
    with open(args.report, "w", encoding="utf-8") as f:
        f.write("path\tstatus\treason\n")
        f.writelines(f"{p}\t{s}\t{why}\n" for p, s, why in bad)
    unreadable = sum(s == "unreadable" for _, s, _ in bad)
    for p, s, why in bad[:20]:
        print(f"{s}: {p}: {why}")
    if len(bad) > 20:
        print(f"... {len(bad) - 20} more in {args.report}")
    print(f"{len(records)} videos: {unreadable} unreadable, {len(bad) - unreadable} suspicious "
          f"({'every frame decoded' if args.deep else 'first and last frames decoded'}); "
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
    pk.add_argument("--overwrite", action="store_true",
                    help="rebuild a dataset of this name that was built from other inputs")
    va = sub.choices["validate"]
    va.add_argument("--annotations", required=True)
    va.add_argument("--report", default="video_report.tsv")
    va.add_argument("--min-frames", type=int, default=16, help="fewer frames is 'suspicious'")
    for s in (pk, va):
        s.add_argument("--deep", action="store_true",
                       help="decode every frame of every video (default: the first and last)")
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            pack(args)
            return 0
        if not os.path.isfile(args.annotations):
            raise UsageError(f"--annotations {args.annotations} does not exist")
        return validate(args)
    except (UsageError, annotations.AnnotationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
