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


def source_name(source: Any, index: int) -> str:
    """The name of record `index` without loading it where the source can tell (a file list
    names its file even when the file is missing); else its path or video id, else '#index'."""
    describe = getattr(source, "describe", None)
    if describe is not None:
        return describe(index)
    try:
        return example_id(source[index], index)
    except LOAD_ERRORS:
        return f"#{index}"


def reason(error: BaseException) -> str:
    """One line: why a video could not be loaded (DecodeError messages already say it in
    words; other errors keep their type, e.g. FileNotFoundError)."""
    if isinstance(error, DecodeError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"file not found: {error.filename or error}"
    return f"{type(error).__name__}: {error}"


def log_once(name: str, error: BaseException) -> None:
    """Log a bad video's reason the first time this process meets it."""
    if name not in _logged:
        _logged.add(name)
        logging.warning("Skipping unreadable video %s: %s", name, reason(error))


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
                log_once(name, e)
                failed.append(name)
                idx = int(rng.integers(len(self.source)))  # deterministic replacement
                continue
            out["skipped"] = np.int32(len(failed))
            out["skipped_ids"] = np.asarray(";".join(failed))
            return out
        raise RuntimeError(f"{self.max_tries} videos in a row could not be loaded: {failed}. "
                           f"Run `python -m input_pipelines.build validate` on the dataset.")


class BadVideoTracker:
    """Host-side accounting of skipped videos.

    Every failed draw is counted (`count`, logged as bad_draws) but the budget is on distinct
    files (`distinct`, logged as bad_videos): a bad file met again in every epoch is still one
    bad file. The run stops with the list of files once more than `budget` distinct files, or
    (fraction > 0) more than fraction x num_examples of them, have failed.
    """

    def __init__(self, budget: int, fraction: float = 0.0, num_examples: int = 0):
        self.budget = budget
        self.fraction, self.num_examples = fraction, num_examples
        self.count = 0
        self.ids: list[str] = []
        self._distinct: set[str] = set()

    @property
    def distinct(self) -> int:
        return len(self._distinct)

    def update(self, batch: dict) -> dict:
        """Remove the host-only fields from a batch (returned), counting what they report."""
        skipped = batch.pop("skipped", None)
        ids = batch.pop("skipped_ids", None)
        if skipped is not None:
            self.count += int(np.sum(skipped))
            for joined in np.asarray(ids).ravel():
                new = [s for s in str(joined).split(";") if s]
                self.ids.extend(new)
                self._distinct.update(new)
        limit, what = self.budget, f"data.max_bad_videos={self.budget}"
        if self.fraction > 0 and self.num_examples:
            by_fraction = int(self.fraction * self.num_examples)
            if by_fraction < limit:
                limit = by_fraction
                what = (f"data.max_bad_fraction={self.fraction} of {self.num_examples} videos "
                        f"({by_fraction})")
        if self.distinct > limit:
            unique = sorted(self._distinct)
            raise RuntimeError(
                f"{self.distinct} videos failed to load, more than {what} ({self.count} failed "
                f"draws in all). Offending files ({len(unique)}): {unique}. Remove or re-encode "
                f"them (`python -m input_pipelines.build validate` lists them all, with the "
                f"reasons), or raise the budget.")
        return batch
