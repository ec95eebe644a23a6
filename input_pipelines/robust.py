"""Loading that survives bad videos: skip, replace deterministically, count, report.

A missing, empty, truncated, non-video or undecodable file raises while loading its clip. The
example is then replaced by another one drawn from the element's own random generator (so the
stream stays deterministic and resumable), the failure is logged once per process with its path,
and the element records it: 'skipped' (how many videos were replaced to produce it) and
'skipped_ids' (their ids, ';'-joined). BadVideoTracker, on the training side, sums them into the
logs and stops the run with the list of offending files once a budget is exceeded.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from absl import logging

from input_pipelines.decode import DecodeError

# What loading a bad file can raise: our decode errors, PyAV/FFmpeg errors (av.FFmpegError is an
# OSError), missing files (OSError), malformed metadata (ValueError, KeyError).
LOAD_ERRORS = (DecodeError, OSError, ValueError, KeyError, EOFError)
HOST_KEYS = ("skipped", "skipped_ids")  # element fields that stay on the host
_logged: set[str] = set()


def example_id(example: Any, index: int) -> str:
    """The best name of an example for an error report: its path or video id, else its index."""
    if isinstance(example, dict):
        for key in ("path", "video_id"):
            if key in example:
                v = example[key]
                return v.decode() if isinstance(v, bytes) else str(v)
    return f"#{index}"


@dataclasses.dataclass(frozen=True)
class SkipBadVideos:
    """grain random_map over source indices: load, transform, replace the example on failure.

    source: random-access source of examples (dicts); clip_fn(example, rng) -> dict of arrays.
    max_tries: consecutive failures for one element before the pipeline gives up (a dataset that
    is mostly broken should fail loudly, not spin).
    """

    source: Any
    clip_fn: Callable[[dict, np.random.Generator], dict]
    max_tries: int = 20

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        failed: list[str] = []
        idx = int(index)
        for _ in range(self.max_tries):
            describe = getattr(self.source, "describe", None)  # names a file even if unreadable
            name = describe(idx) if describe else f"#{idx}"
            try:
                example = self.source[idx]
                name = example_id(example, idx)
                out = self.clip_fn(example, rng)
            except LOAD_ERRORS as e:
                if name not in _logged:
                    _logged.add(name)
                    logging.warning("Skipping unreadable video %s: %s: %s", name,
                                    type(e).__name__, e)
                failed.append(name)
                idx = int(rng.integers(len(self.source)))  # deterministic replacement
                continue
            out["skipped"] = np.int32(len(failed))
            out["skipped_ids"] = np.asarray(";".join(failed))
            return out
        raise RuntimeError(f"{self.max_tries} videos in a row could not be loaded: {failed}. "
                           f"Run `python -m input_pipelines.build validate` on the dataset.")


class BadVideoTracker:
    """Host-side accounting of skipped videos; raises past `budget` with the offending files."""

    def __init__(self, budget: int):
        self.budget = budget
        self.count = 0
        self.ids: list[str] = []

    def update(self, batch: dict) -> dict:
        """Remove the host-only fields from a batch (returned), counting what they report."""
        skipped = batch.pop("skipped", None)
        ids = batch.pop("skipped_ids", None)
        if skipped is not None:
            self.count += int(np.sum(skipped))
            for joined in np.asarray(ids).ravel():
                self.ids.extend(s for s in str(joined).split(";") if s)
        if self.count > self.budget:
            unique = sorted(set(self.ids))
            raise RuntimeError(
                f"{self.count} videos failed to load, more than data.max_bad_videos="
                f"{self.budget}. Offending files ({len(unique)}): {unique}. Remove or re-encode "
                f"them (`python -m input_pipelines.build validate` lists them all), or raise the "
                f"budget.")
        return batch
