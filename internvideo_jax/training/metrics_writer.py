"""Training logs from process 0: console lines, a progress bar with ETA, metrics.jsonl, TensorBoard."""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter


class MetricsWriter:
    """Writes scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard; silent on other processes."""

    def __init__(self, workdir: str, total_steps: int, start_step: int, progress: bool = True):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        drop_records_after(path, start_step)  # a resumed run writes those steps again
        self.jsonl = open(path, "a")
        # purge_step: TensorBoard drops the earlier events of steps >= start_step, so a run
        # resumed after a crash shows one curve, not two overlapping ones.
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                purge_step=start_step if start_step else None)
        self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             disable=not progress, file=sys.stderr)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for k, v in scalars.items():
            self.tb.add_scalar(k, float(v), step)
        line = " ".join(f"{k} {_fmt(v)}" for k, v in scalars.items())
        self.bar.write(f"step {step}/{self.bar.total}: {line}")
        if "loss" in scalars:  # evaluation records have none
            self.bar.set_postfix(loss=_fmt(scalars["loss"]), refresh=False)

    def images(self, pictures: dict[str, str], step: int) -> None:
        """Each PNG of {tag: path} as a TensorBoard image at `step` (the pictures tab)."""
        if not self.active or not pictures:
            return
        from PIL import Image
        for tag, path in pictures.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            self.tb.add_image(tag, pixels, step, dataformats="HWC")
        self.tb.flush()

    def advance(self, n: int = 1) -> None:
        if self.active:
            self.bar.update(n)

    def info(self, text: str) -> None:
        if self.active:
            self.bar.write(text)

    def close(self) -> None:
        if not self.active:
            return
        self.bar.close()
        self.tb.close()
        self.jsonl.close()


def _fmt(v: float) -> str:
    v = float(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def drop_records_after(path: str, step: int) -> int:
    """Remove the records of metrics.jsonl past `step` (written by a run that crashed after its
    last checkpoint at `step`); returns how many were removed. The file is replaced atomically."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    keep = [line for line in lines if _step_of(line) <= step]
    if len(keep) == len(lines):
        return 0
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)
    return len(lines) - len(keep)


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return float("inf")  # a line cut off by the crash: dropped


def read_metrics(workdir: str) -> list[dict]:
    """All records of WORKDIR/metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
