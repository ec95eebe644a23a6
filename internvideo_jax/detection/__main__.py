r"""python -m internvideo_jax.detection {score}: spatio-temporal action detection from the command
line.

Examples:
  # AVA frame-mAP@0.5IOU of a detections CSV (the official evaluator's numbers) and AP per class;
  # metrics.json holds {"mAP": x, "per_class": {name: AP}}, null where a class has no ground truth
  python -m internvideo_jax.detection score --ground-truth ava_val_v2.2.csv \
      --detections detections.csv --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt \
      --exclusions ava_val_excluded_timestamps_v2.2.csv --out metrics.json

A missing or malformed file ends the command with exit status 2 and one `error: ...` line.
Each subcommand is a row of COMMANDS: its help, a function adding its arguments, and a function
running it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from internvideo_jax import subcommands
from internvideo_jax.detection import ava_eval
from internvideo_jax.detection.ava_eval import AvaFormatError


# ---- score --------------------------------------------------------------------------------------
def score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ground-truth", required=True,
                   help="CSV: video_id,timestamp,x1,y1,x2,y2,action_id,person_id")
    p.add_argument("--detections", required=True,
                   help="CSV: video_id,timestamp,x1,y1,x2,y2,action_id,score (50 best a keyframe "
                        "kept)")
    p.add_argument("--labelmap", required=True, help="label map pbtxt (item { name id } blocks)")
    p.add_argument("--exclusions",
                   help="CSV of video_id,timestamp keyframes left out of both; with it every "
                        "other detected keyframe is scored (the official 2018-2019 rule), without "
                        "it only the ground truth's keyframes")
    p.add_argument("--out", help="write {'mAP', 'per_class'} here as JSON")


def _ap_text(ap: float) -> str:
    return "   n/a" if math.isnan(ap) else f"{ap:.4f}"


def score(a: argparse.Namespace) -> None:
    """Print mAP and AP per class; write them as JSON (NaN as null) with --out."""
    metrics = ava_eval.evaluate(a.ground_truth, a.detections, a.labelmap, a.exclusions)
    per_class = metrics["per_class"]
    with_gt = sum(not math.isnan(ap) for ap in per_class.values())
    print(f"frame-mAP@0.5IOU {_ap_text(metrics['mAP'])} over {with_gt} of {len(per_class)} "
          f"classes (the others have no ground truth: n/a)")
    print("AP      class")
    for name, ap in per_class.items():
        print(f"{_ap_text(ap)}  {name}")
    if a.out:
        data = {"mAP": None if math.isnan(metrics["mAP"]) else metrics["mAP"],
                "per_class": {k: None if math.isnan(v) else v for k, v in per_class.items()}}
        try:
            with open(a.out, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, allow_nan=False)
        except OSError as e:
            raise AvaFormatError(f"{a.out}: cannot be written ({e.strerror})") from None
        print(f"wrote {a.out}")


COMMANDS = {
    "score": ("AVA frame-mAP of a detections CSV", score_args, score),
}


def main(argv: list[str] | None = None) -> int:
    return subcommands.run("python -m internvideo_jax.detection", __doc__, COMMANDS, (AvaFormatError,), argv)


if __name__ == "__main__":
    sys.exit(main())
