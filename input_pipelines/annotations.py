"""Annotation files of the common video datasets, parsed into one record format.

A record is a dict: {'path': str (relative to the video root, or absolute), 'label': int (-1 when
unlabelled), 'captions': list[str], 'video_id': str}.

Files are read as UTF-8 (non-ASCII file names and captions are kept as they are).

Formats (`read(path, fmt, ...)`):
  list      VideoMAE / Kinetics list files: one `path label` per line; blank lines and lines
            starting with `#` are skipped. Each line is split by the first rule that applies:
              1. it contains a tab: split at the last tab (the path may hold spaces and commas);
              2. it parses as one CSV row of 2 fields with an integer second field (quotes
                 allowed: `"my clip, take 2.mp4",3`; `""` is a literal quote);
              3. otherwise the last whitespace-separated token is the label and the rest (spaces
                 allowed) the path.
            The label must be an integer. A path with spaces and commas is safest tab-separated.
  csv       CSV with a header. Path column: path | video | filename | file; or the official
            Kinetics columns youtube_id, time_start, time_end (file `<id>_<start:06d>_<end:06d>.mp4`).
            Label column: label_id (int) or label (int, or a class name mapped by `label_map` or by
            sorted unique names). Caption column (optional): caption | text | sentence | name.
  ssv2      Something-Something v2: a JSON list of {"id", "template"/"label"} plus the labels JSON
            {"class name": "index"}; templates' "[something]" brackets are removed to find the class.
            Files `<id>.webm`.
  captions  JSON: a list of {"video": path, "caption": str | [str, ...]}, or MSR-VTT style
            {"sentences": [{"video_id", "caption"}], ...} (files `<video_id>.mp4`), several captions
            per video grouped; or CSV (WebVid: videoid, name -> `<videoid>.mp4`).
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import OrderedDict

FORMATS = ("list", "csv", "ssv2", "captions")


class AnnotationError(ValueError):
    """An annotation file that cannot be parsed; the message names the file and the line."""


def _record(path: str, label: int = -1, captions=(), video_id: str | None = None) -> dict:
    vid = video_id or os.path.splitext(os.path.basename(path))[0]
    return {"path": path, "label": int(label), "captions": list(captions), "video_id": vid}


def example(record: dict, video: bytes, path: str, num_frames: int = 0, fps: float = 0.0,
            **extra) -> dict:
    """The example every source yields for an annotation record (the one statement of the
    schema): {video: encoded bytes, label: int (-1: none), caption: the captions joined by
    newlines, video_id, path, num_frames (0: unknown until decoded), fps, **extra}."""
    return {"video": video, "label": record["label"], "caption": "\n".join(record["captions"]),
            "video_id": record["video_id"], "path": path, "num_frames": num_frames, "fps": fps,
            **extra}


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _split_list_line(line: str) -> tuple[list[str], bool]:
    """The fields of one `list` line by the module docstring's rules, and whether they form a
    valid (path, integer label) pair; for an invalid line, the fields that the most specific rule
    found (tab, else CSV when the line has a comma, else whitespace), for the error message."""
    if "\t" in line:
        fields = [f.strip() for f in line.rsplit("\t", 1)]
        return fields, len(fields) == 2 and bool(fields[0]) and _is_int(fields[1])
    try:
        row = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]
    except csv.Error:
        row = []
    if len(row) == 2 and row[0] and _is_int(row[1]):
        return row, True
    fields = line.rsplit(None, 1)
    if len(fields) == 2 and _is_int(fields[1]):
        return fields, True
    return (row if "," in line and row else fields), False


def read_list(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields, ok = _split_list_line(line)
            if not ok:
                raise AnnotationError(
                    f"{path}:{n}: expected 'path<TAB>label' (or 'path label', 'path,label') with "
                    f"an integer label; got {line!r}, parsed fields {fields}. If a path contains "
                    f"spaces or commas, separate the label with a tab.")
            out.append(_record(fields[0], int(fields[1])))
    return out


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def read_csv(path: str, label_map: dict[str, int] | None = None) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise AnnotationError(f"{path}: no rows under the header")
    names = sorted({r["label"] for r in rows if "label" in r and r["label"]
                    and not r["label"].lstrip("-").isdigit()})
    label_map = label_map or {name: i for i, name in enumerate(names)}
    out = []
    for n, row in enumerate(rows, 2):
        file = _pick(row, ("path", "video", "filename", "file"))
        if file is None and row.get("youtube_id"):
            file = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_" \
                   f"{int(float(row['time_end'])):06d}.mp4"
        if file is None:
            raise AnnotationError(f"{path}:{n}: no path column (path/video/filename/file or "
                                  f"youtube_id+time_start+time_end) in {sorted(row)}")
        label = -1
        raw = _pick(row, ("label_id", "label"))
        if raw is not None:
            if raw.lstrip("-").isdigit():
                label = int(raw)
            elif raw in label_map:
                label = label_map[raw]
            else:
                raise AnnotationError(f"{path}:{n}: label {raw!r} is not in the label map")
        caption = _pick(row, ("caption", "text", "sentence", "name"))
        out.append(_record(file, label, [caption] if caption else []))
    return out


def ssv2_class_name(template: str) -> str:
    """'Putting [something] onto [something]' -> 'Putting something onto something'."""
    return re.sub(r"[\[\]]", "", template)


def read_ssv2(path: str, labels_path: str) -> list[dict]:
    with open(labels_path, encoding="utf-8") as f:
        label_map = {k: int(v) for k, v in json.load(f).items()}
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    out = []
    for item in items:
        template = item.get("template") or item.get("label")
        name = ssv2_class_name(template) if template else None
        if name is not None and name not in label_map:
            raise AnnotationError(f"{path}: video {item['id']}: class {name!r} is not in "
                                  f"{labels_path}")
        label = label_map[name] if name is not None else -1
        caption = item.get("label")
        out.append(_record(f"{item['id']}.webm", label, [caption] if caption else [],
                           str(item["id"])))
    return out


def read_captions(path: str) -> list[dict]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        grouped: OrderedDict[str, list[str]] = OrderedDict()
        for n, row in enumerate(rows, 2):
            file = _pick(row, ("path", "video", "filename"))
            if file is None and row.get("videoid"):
                file = f"{row['videoid']}.mp4"
            caption = _pick(row, ("caption", "text", "sentence", "name"))
            if file is None or caption is None:
                raise AnnotationError(f"{path}:{n}: need a video column and a caption column, "
                                      f"got {sorted(row)}")
            grouped.setdefault(file, []).append(caption)
        return [_record(p, -1, c) for p, c in grouped.items()]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    grouped = OrderedDict()
    if isinstance(data, dict) and "sentences" in data:  # MSR-VTT
        for s in data["sentences"]:
            grouped.setdefault(f"{s['video_id']}.mp4", []).append(s["caption"])
    elif isinstance(data, list):
        for item in data:
            caps = item.get("caption", item.get("captions"))
            caps = [caps] if isinstance(caps, str) else list(caps)
            grouped.setdefault(item["video"], []).extend(caps)
    else:
        raise AnnotationError(f"{path}: expected a list of {{video, caption}} or an MSR-VTT "
                              f"JSON with 'sentences'")
    return [_record(p, -1, c) for p, c in grouped.items()]


def read(path: str, fmt: str, labels_path: str | None = None) -> list[dict]:
    """Parse an annotation file of format `fmt` (one of FORMATS)."""
    if fmt == "list":
        return read_list(path)
    if fmt == "csv":
        label_map = None
        if labels_path:
            with open(labels_path, encoding="utf-8") as f:
                label_map = {line.strip(): i for i, line in enumerate(f) if line.strip()}
        return read_csv(path, label_map)
    if fmt == "ssv2":
        if not labels_path:
            raise AnnotationError("the ssv2 format needs --labels (something-something-v2-labels."
                                  "json)")
        return read_ssv2(path, labels_path)
    if fmt == "captions":
        return read_captions(path)
    raise AnnotationError(f"unknown annotation format {fmt!r}; choose one of {FORMATS}")
