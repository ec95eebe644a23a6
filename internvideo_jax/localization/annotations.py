"""Ground truth of temporal action localization in the ActivityNet JSON format, and the THUMOS-14
conversion to it.

The format (what activitynet.evaluate_detection, and the official evaluator, read):
  {"version": str, "taxonomy": [], "database": {video_id: {
      "subset": "training" | "validation" | "test" | ...,
      "duration": seconds,
      "fps": frames per second (only when known),
      "annotations": [{"segment": [start, end] (seconds), "label": class name}, ...],
      "ambiguous": [[start, end], ...] (THUMOS-14 only: segments marked Ambiguous, neither action
                   nor background; not annotations, the evaluators never read them)}}}

THUMOS-14 temporal annotations are one text file per class and subset, `<ClassName>_val.txt`
(subset "validation") or `<ClassName>_test.txt` ("test"), with lines `video_id start end`
(whitespace separated, seconds); the class name is the file name up to its last `_val` / `_test`.
`Ambiguous_val.txt` / `Ambiguous_test.txt` list the ambiguous segments. ActionFormer and most work
train on validation and report on test. Some test videos are commonly left out as mis-annotated
(e.g. video_test_0000270 and video_test_0001496): nothing is left out unless `exclude` names it.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping

from input_pipelines import decode
from internvideo_jax.localization.activitynet import (FormatError, check_ground_truth, is_number,
                                                      load_json)

THUMOS_SUFFIXES = {"validation": "_val", "test": "_test"}


def _some(ids: list) -> str:
    """The first ids of a list, for a message."""
    return ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def check_activitynet(data, source: str) -> None:
    """Raise FormatError unless data is ground truth in the format of the module docstring: the
    evaluator's checks, plus per video a 'duration' >= 0 and, if given, an 'fps' > 0."""
    check_ground_truth(data, source)
    for vid, video in data["database"].items():
        duration, fps = video.get("duration"), video.get("fps")
        if not (is_number(duration) and duration >= 0):
            raise FormatError(f"{source}: video {vid!r}: needs a 'duration' in seconds (a number "
                              f">= 0); got {duration!r}")
        if fps is not None and not (is_number(fps) and fps > 0):
            raise FormatError(f"{source}: video {vid!r}: 'fps' must be a number > 0 or absent; "
                              f"got {fps!r}")


def read_activitynet(path: str) -> dict:
    """The ground-truth JSON at path, checked (check_activitynet); errors name the file and the
    video."""
    data = load_json(path)
    check_activitynet(data, path)
    return data


def write_activitynet(database: dict, path: str, version: str = "1.0") -> None:
    """Write {"version", "taxonomy": [], "database"} to path (replaced only once complete).

    database: video id -> entry as in the module docstring; checked first. The empty taxonomy is
    there because the official evaluator requires the key.
    """
    data = {"version": version, "taxonomy": [], "database": database}
    check_activitynet(data, "database to write")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


# ---- THUMOS-14 ----------------------------------------------------------------------------------
def _read_thumos_file(path: str) -> list[tuple[str, list[float]]]:
    """(video id, [start, end] seconds) of each line of one THUMOS-14 annotation file, in order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                vid, start, end = fields[0], float(fields[1]), float(fields[2])
                if len(fields) != 3 or not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError
            except (ValueError, IndexError):
                raise FormatError(f"{path}:{n}: expected 'video_id start end' (seconds); got "
                                  f"{line.strip()!r}") from None
            if end < start:
                raise FormatError(f"{path}:{n}: segment of {vid} ends ({end}) before it starts "
                                  f"({start}); fix the line or drop it")
            out.append((vid, [start, end]))
    return out


def read_thumos(annotation_dir: str, subset: str) -> tuple[dict, dict]:
    """THUMOS-14 temporal annotations of one subset ("validation" or "test") in annotation_dir.

    Returns (actions, ambiguous): video id -> [{"segment": [start, end], "label": class name}]
    (classes in file-name order, then line order), and video id -> [[start, end], ...] from
    Ambiguous_<val|test>.txt (empty without that file). Raises FormatError for a missing
    directory, no class file of the subset, or a malformed line (naming file and line).
    """
    if subset not in THUMOS_SUFFIXES:
        raise FormatError(f"THUMOS-14 subset {subset!r}: must be one of {list(THUMOS_SUFFIXES)}")
    ending = f"{THUMOS_SUFFIXES[subset]}.txt"
    try:
        names = sorted(os.listdir(annotation_dir))
    except OSError as e:
        raise FormatError(f"{annotation_dir}: cannot list the annotation directory "
                          f"({e.strerror})") from None
    files = [n for n in names if n.endswith(ending) and len(n) > len(ending)]
    if not [n for n in files if n != f"Ambiguous{ending}"]:
        raise FormatError(f"{annotation_dir}: no THUMOS-14 {subset} annotation file "
                          f"(<ClassName>{ending}); it holds: {_some(names) or 'nothing'}")
    actions: dict = {}
    ambiguous: dict = {}
    for name in files:
        label = name[:-len(ending)]
        for vid, segment in _read_thumos_file(os.path.join(annotation_dir, name)):
            if label == "Ambiguous":
                ambiguous.setdefault(vid, []).append(segment)
            else:
                actions.setdefault(vid, []).append({"segment": segment, "label": label})
    return actions, ambiguous


def _to_float(text) -> float:
    """A CSV cell as a float; NaN when it is not a number (or the cell is missing)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_durations(path: str) -> dict:
    """video id -> {"duration": seconds[, "fps": frames/s]} from a CSV whose header has
    `video_id` and `duration` and optionally `fps` (an empty fps cell: unknown). Raises
    FormatError for a missing file or column, a bad value or a repeated video (naming the line).
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
    except OSError as e:
        raise FormatError(f"{path}: cannot read the durations CSV ({e.strerror})") from None
    if not rows or not {"video_id", "duration"} <= set(rows[0][1]):
        raise FormatError(f"{path}: expected a CSV with a header 'video_id,duration' (and "
                          f"optionally ',fps') and one row per video")
    out = {}
    for n, row in rows:
        vid = (row["video_id"] or "").strip()
        duration = _to_float(row["duration"])
        fps = _to_float(row["fps"]) if (row.get("fps") or "").strip() else None
        if not (vid and math.isfinite(duration) and duration >= 0
                and (fps is None or (math.isfinite(fps) and fps > 0))):
            raise FormatError(f"{path}:{n}: expected a video id, a duration in seconds >= 0 and "
                              f"an fps > 0 (or none); got {dict(row)}")
        if vid in out:
            raise FormatError(f"{path}:{n}: video {vid} is listed twice")
        out[vid] = {"duration": duration} if fps is None else {"duration": duration, "fps": fps}
    return out


def probe_durations(video_dir: str, video_ids: Iterable[str]) -> dict:
    """video id -> {"duration": seconds, "fps": frames/s} probed (input_pipelines.decode.probe,
    from the frame table) from the file `<video_id>.<any extension>` in video_dir. Raises
    FormatError listing the videos without a file, for a name matching two files, or for a file
    that cannot be used."""
    try:
        names = sorted(os.listdir(video_dir))
    except OSError as e:
        raise FormatError(f"{video_dir}: cannot list the video directory ({e.strerror})") from None
    files: dict = {}
    for name in names:
        files.setdefault(os.path.splitext(name)[0], []).append(name)
    video_ids = list(video_ids)
    missing = [v for v in video_ids if v not in files]
    if missing:
        raise FormatError(f"{video_dir}: no video file <video_id>.<ext> for {len(missing)} "
                          f"annotated videos: {_some(missing)}")
    out = {}
    for vid in video_ids:
        if len(files[vid]) > 1:
            raise FormatError(f"{video_dir}: video {vid} matches several files {files[vid]}; "
                              f"keep one")
        path = os.path.join(video_dir, files[vid][0])
        try:
            with open(path, "rb") as f:
                facts = decode.probe(f.read())
        except OSError as e:
            raise FormatError(f"{path}: cannot be read ({e.strerror})") from None
        except decode.DecodeError as e:
            raise FormatError(f"{path}: {e}") from None
        out[vid] = {"duration": facts["duration"], "fps": facts["fps"]}
    return out


def convert_thumos(annotation_dir: str, subset: str, *, durations: Mapping | None = None,
                   video_dir: str | None = None, exclude: Iterable[str] = (),
                   fps: float | None = None) -> dict:
    """The ActivityNet database (module docstring) of one THUMOS-14 subset.

    Videos: those of the annotation files (action or ambiguous segments), sorted by id, less
    `exclude` (each must be one of them). Durations and fps: from `durations` (video id ->
    {"duration"[, "fps"]}, e.g. read_durations) or probed from the files in `video_dir`, exactly
    one of the two; `fps` is stored for the videos whose fps neither gives. Raises FormatError
    listing the videos without a duration, or excluded ids that are not annotated.
    """
    if (durations is None) == (video_dir is None):
        raise ValueError("convert_thumos: give exactly one of durations and video_dir")
    actions, ambiguous = read_thumos(annotation_dir, subset)
    videos = sorted(set(actions) | set(ambiguous))
    exclude = set(exclude)
    unknown = sorted(exclude - set(videos))
    if unknown:
        raise FormatError(f"exclude: {_some(unknown)} not annotated in the {subset} subset of "
                          f"{annotation_dir}; check the ids")
    videos = [v for v in videos if v not in exclude]
    if video_dir is not None:
        durations = probe_durations(video_dir, videos)
    missing = [v for v in videos if v not in durations]
    if missing:
        raise FormatError(f"no duration for {len(missing)} annotated videos: {_some(missing)}; "
                          f"add them to the durations (video_id,duration[,fps])")
    database = {}
    for vid in videos:
        entry = {"subset": subset, "duration": durations[vid]["duration"]}
        video_fps = durations[vid].get("fps", fps)
        if video_fps is not None:
            entry["fps"] = video_fps
        entry["annotations"] = actions.get(vid, [])
        if vid in ambiguous:
            entry["ambiguous"] = ambiguous[vid]
        database[vid] = entry
    return database
