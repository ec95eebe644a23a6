r"""python -m internvideo_jax.localization {score,convert-thumos}: temporal action localization
from the command line.

Examples:
  # ActivityNet detection mAP of a results file (the official evaluator's numbers), per tIoU
  # threshold and averaged; metrics.json holds the same and AP per class
  python -m internvideo_jax.localization score --ground-truth activity_net.v1-3.min.json \
      --predictions results.json --subset validation --tiou 0.5:0.05:0.95 --out metrics.json
  # THUMOS-14 test annotations -> ActivityNet-format ground truth, durations and fps probed from
  # the videos, leaving out two commonly dropped mis-annotated videos
  python -m internvideo_jax.localization convert-thumos \
      --annotations TH14_Temporal_Annotations_Test/annotations/annotation --subset test \
      --videos TH14_test_set_mp4 --exclude video_test_0000270,video_test_0001496 \
      --out thumos14_test.json
  # ... or with durations from a CSV (video_id,duration[,fps]) and one fps for all videos
  python -m internvideo_jax.localization convert-thumos --annotations annotation \
      --subset validation --durations durations.csv --fps 30 --out thumos14_val.json

A missing or malformed file ends the command with exit status 2 and one `error: ...` line.
Each subcommand is a row of COMMANDS: its help, a function adding its arguments, and a function
running it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from internvideo_jax import subcommands
from internvideo_jax.localization import activitynet, annotations
from internvideo_jax.localization.activitynet import FormatError


def _tious(text: str) -> list[float]:
    try:
        return activitynet.parse_tious(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _read_ids(path: str) -> list[str]:
    """Video ids of a text file, one a line; blank lines and lines starting with # skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]
    except OSError as e:
        raise FormatError(f"{path}: cannot read the video ids ({e.strerror})") from None


def _write_json(data: dict, path: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    except OSError as e:
        raise FormatError(f"{path}: cannot be written ({e.strerror})") from None


# ---- score --------------------------------------------------------------------------------------
def score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ground-truth", required=True, help="ActivityNet-format ground-truth JSON")
    p.add_argument("--predictions", required=True,
                   help="results JSON: {'results': {video_id: [{'segment', 'label', 'score'}]}}")
    p.add_argument("--subset", default="validation", help="ground-truth subset (validation)")
    p.add_argument("--tiou", type=_tious, default=activitynet.parse_tious("0.3:0.1:0.7"),
                   help="tIoU thresholds: start:step:stop (stop included), a,b,c or one number "
                        "(0.3:0.1:0.7; ActivityNet reports 0.5:0.05:0.95)")
    p.add_argument("--blocked", help="text file of video ids (one a line) left out of both")
    p.add_argument("--out", help="write the metrics here as JSON")


def score(a: argparse.Namespace) -> None:
    """Print mAP per threshold, the average and the counts; write them with AP per class."""
    blocked = _read_ids(a.blocked) if a.blocked else ()
    metrics = activitynet.evaluate_detection(activitynet.load_json(a.ground_truth),
                                             activitynet.load_json(a.predictions), a.subset,
                                             a.tiou, blocked)
    gt, pred = metrics["ground_truth"], metrics["predictions"]
    print(f"subset {a.subset!r}: {gt['videos']} videos, {gt['instances']} ground-truth segments "
          f"of {gt['classes']} classes; {pred['counted']} predictions")
    print("tIoU     mAP (%)")
    for key, value in metrics["mAP"].items():
        print(f"{key:<8} {100 * value:6.2f}")
    print(f"{'average':<8} {100 * metrics['average_mAP']:6.2f}")
    if pred["ignored"]:
        labels = ", ".join(map(repr, pred["ignored_labels"]))
        print(f"warning: {pred['ignored']} predictions ignored: their labels have no ground truth "
              f"in subset {a.subset!r}: {labels}", file=sys.stderr)
    if a.out:
        _write_json(metrics, a.out)
        print(f"wrote {a.out}")


# ---- convert-thumos -----------------------------------------------------------------------------
def convert_thumos_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", required=True,
                   help="directory of THUMOS-14 <ClassName>_val.txt / _test.txt files")
    p.add_argument("--subset", required=True, choices=list(annotations.THUMOS_SUFFIXES))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--durations", help="CSV with a header video_id,duration[,fps]")
    source.add_argument("--videos", help="directory of <video_id>.<ext> files to probe")
    p.add_argument("--exclude", type=lambda s: [v for v in s.split(",") if v], default=[],
                   help="comma-separated video ids to leave out")
    p.add_argument("--fps", type=float, help="fps stored for videos whose fps is not known")
    p.add_argument("--out", required=True, help="ActivityNet-format JSON to write")
    p.add_argument("--append", action="store_true",
                   help="add the subset to an existing --out (one file for training and test)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def convert_thumos(a: argparse.Namespace) -> None:
    """Write the subset's ground truth (added to --out's with --append) and say what it holds.
    An existing --out is never replaced unless --overwrite says so."""
    if os.path.exists(a.out) and not (a.append or a.overwrite):
        raise FormatError(f"{a.out} exists: pass --append to add this subset to it, or "
                          f"--overwrite to replace it.")
    durations = annotations.read_durations(a.durations) if a.durations else None
    database = annotations.convert_thumos(a.annotations, a.subset, durations=durations,
                                          video_dir=a.videos, exclude=a.exclude, fps=a.fps)
    if a.append and os.path.exists(a.out):
        existing = annotations.read_activitynet(a.out)["database"]
        both = sorted(set(existing) & set(database))
        if both:
            raise FormatError(f"{a.out} already holds {len(both)} of these videos (e.g. "
                              f"{both[:3]}): convert each subset once.")
        database = {**existing, **database}
    try:
        annotations.write_activitynet(database, a.out, version="THUMOS14")
    except OSError as e:
        raise FormatError(f"{a.out}: cannot be written ({e.strerror})") from None
    segments = [ann for v in database.values() for ann in v["annotations"]]
    ambiguous = sum(len(v.get("ambiguous", [])) for v in database.values())
    print(f"wrote {a.out}: {len(database)} videos of subset {a.subset!r}, {len(segments)} "
          f"segments of {len({s['label'] for s in segments})} classes, {ambiguous} ambiguous "
          f"segments kept apart" + (f"; left out {', '.join(a.exclude)}" if a.exclude else ""))


COMMANDS = {
    "score": ("ActivityNet detection mAP of a results file", score_args, score),
    "convert-thumos": ("THUMOS-14 annotations -> ActivityNet-format ground truth",
                       convert_thumos_args, convert_thumos),
}


def main(argv: list[str] | None = None) -> int:
    return subcommands.run("python -m internvideo_jax.localization", __doc__, COMMANDS, (FormatError,), argv)


if __name__ == "__main__":
    sys.exit(main())
