"""Annotation files of the common video datasets, parsed into one record format.

A record is a dict: {'path': str (relative to the video root, or absolute), 'label': int (-1 when
unlabelled), 'captions': list[str], 'video_id': str}, and, from the QA formats only:
  questions     (qa) list of {'question': str, 'answer': str, 'question_id': str, 'type': str,
                'candidates': str}: the video's questions in file order; question_id is the file's
                id, else '<video_id>#<k>' (k: the question's position among the video's); type is
                '' where the dataset has none; candidates: a multiple-choice question's candidate
                answers joined by newlines (the answer is one of them), '' for an open-ended one;
  answer_index  (mc) int, 0-4: which of the 5 candidate sentences ('captions') is right.

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
  qa        Open-ended video QA, one record per video with its questions, in either form:
            JSON (.json: a list; .jsonl: one object a line) of {video | video_id | gif_name,
              question, answer, optional question_id | id, optional answer_type | question_type |
              type | category_id, optional candidates | options (a list of candidate answers;
              then answer may be the right one's 0-based index)}. The video's file: `video` as given if it has an extension, else
              `<video>.avi` (MSVD-QA names, e.g. vid1234); `video_id` -> `<video_id>.mp4`
              (MSRVTT-QA, e.g. video7010; an integer id N, as the original MSRVTT-QA release writes
              it, is video<N>). The original MSVD-QA release's integer video_id must first be
              mapped to a file name (its youtube_mapping.txt) and given as `video`.
            Tables with a header row (TGIF-QA FrameQA: gif_name, question, answer, type, vid_id,
              key, description): tab-separated and unquoted when the header holds a tab (as the
              release's files are, though named .csv), else comma-separated CSV. File
              `<gif_name>.gif` unless the name has an extension; question_id = vid_id (FRAMEQA<n>,
              one per question); FrameQA's type codes 0/1/2/3 become object/number/color/location
              (the release's README). Multiple-choice QA tables (TGIF-QA Action / Transition:
              gif_name, question, a1..a5, answer = the right one's 0-based index, vid_id, key)
              give each question its candidates.
  mc        MSR-VTT multiple choice (JSFusion's MSR_MC_test.csv): tab-separated with a header,
            columns vid_key (msr<n>) or video_id (video<n>), a1..a5 (the candidate sentences) and
            answer (0-based index of the right one); file `video<n>.mp4`.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import OrderedDict

FORMATS = ("list", "csv", "ssv2", "captions", "qa", "mc")


class AnnotationError(ValueError):
    """An annotation file that cannot be parsed; the message names the file and the line."""


def _record(path: str, label: int = -1, captions=(), video_id: str | None = None) -> dict:
    vid = video_id or os.path.splitext(os.path.basename(path))[0]
    return {"path": path, "label": int(label), "captions": list(captions), "video_id": vid}


# Record fields of some formats only, carried into their examples as they are.
OPTIONAL_FIELDS = ("questions", "answer_index")


def example(record: dict, video: bytes, path: str, num_frames: int = 0, fps: float = 0.0,
            **extra) -> dict:
    """The example every source yields for an annotation record (the one statement of the
    schema): {video: encoded bytes, label: int (-1: none), caption: the captions joined by
    newlines, video_id, path, num_frames (0: unknown until decoded), fps, **extra}, plus the
    record's OPTIONAL_FIELDS where it has them: questions (qa: a list of {question, answer,
    question_id, type}; a packed dataset gives them back column-wise, {question: [...], ...}, as
    bytes: read them with qa.questions_of) and answer_index (mc)."""
    optional = {key: record[key] for key in OPTIONAL_FIELDS if key in record}
    return {"video": video, "label": record["label"], "caption": "\n".join(record["captions"]),
            "video_id": record["video_id"], "path": path, "num_frames": num_frames, "fps": fps,
            **optional, **extra}


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


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _read_table(path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header fields, [(line number, row)]) of a table with a header row: tab-separated without
    quoting when the header holds a tab, else CSV. Names and values are stripped."""
    with open(path, newline="", encoding="utf-8") as f:
        tab = "\t" in f.readline()
        f.seek(0)
        reader = (csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tab
                  else csv.DictReader(f))
        rows = [(reader.line_num, {_strip(k): _strip(v) for k, v in row.items()})
                for row in reader]
        fields = [name.strip() for name in reader.fieldnames or []]
    if not rows:
        raise AnnotationError(f"{path}: no rows under the header")
    return fields, rows


def _with_extension(name: str, default: str) -> str:
    return name if os.path.splitext(name)[1] else name + default


def _qa_video_file(item: dict) -> str | None:
    """The video file a QA entry names (module docstring, format qa), or None."""
    video = _pick(item, ("video",))
    if video is not None:
        return _with_extension(str(video), ".avi")
    video_id = _pick(item, ("video_id",))
    if video_id is not None:
        video_id = str(video_id)
        return _with_extension(f"video{video_id}" if video_id.isdigit() else video_id, ".mp4")
    gif = _pick(item, ("gif_name",))
    return None if gif is None else _with_extension(str(gif), ".gif")


def _qa_question(item: dict, where: str) -> dict:
    """{question, answer, question_id ('' when the entry has none), type, candidates} of one QA
    entry (candidates: newline-joined, '' when the entry has none)."""
    question, answer = item.get("question"), item.get("answer")
    candidates = _qa_candidates(item, where)
    if candidates and _is_index(answer):  # the right candidate's 0-based index
        if not 0 <= int(answer) < len(candidates):
            raise AnnotationError(f"{where}: answer index {answer} is not one of the "
                                  f"{len(candidates)} candidates {candidates}")
        answer = candidates[int(answer)]
    if isinstance(answer, int) and not isinstance(answer, bool):  # a number answer, e.g. a count
        answer = str(answer)
    if not (isinstance(question, str) and question.strip()) \
            or not (isinstance(answer, str) and answer.strip()):
        raise AnnotationError(
            f"{where}: a QA entry needs a non-empty 'question' (text) and 'answer' (text); got "
            f"question={question!r}, answer={answer!r} (fields {sorted(map(str, item))})")
    if candidates and answer not in candidates:
        raise AnnotationError(f"{where}: answer {answer!r} is none of the candidates "
                              f"{candidates}")
    question_id = _pick(item, ("question_id", "id", "vid_id"))
    kind = _pick(item, ("answer_type", "question_type", "type", "category_id"))
    return {"question": question, "answer": answer,
            "question_id": "" if question_id is None else str(question_id),
            "type": "" if kind is None else str(kind), "candidates": "\n".join(candidates)}


def _is_index(answer) -> bool:
    return (isinstance(answer, int) and not isinstance(answer, bool)) or (
        isinstance(answer, str) and answer.strip().isdigit())


def _qa_candidates(item: dict, where: str) -> list[str]:
    """A QA entry's candidate answers: a 'candidates' / 'options' list, or the columns a1..a5 of
    a multiple-choice table; [] for an open-ended entry."""
    listed = _pick(item, ("candidates", "options"))
    if listed is None:
        listed = [item[c] for c in MC_CANDIDATES if c in item]
    if not isinstance(listed, list) or not all(isinstance(c, str) and c.strip() and "\n" not in c
                                               for c in listed):
        raise AnnotationError(f"{where}: candidates must be a list of non-empty one-line "
                              f"texts, got {listed!r}")
    return [c.strip() for c in listed]


def _group_questions(entries) -> list[dict]:
    """One record per video, its questions in entry order; entries: (where, dict) pairs."""
    grouped: OrderedDict[str, dict] = OrderedDict()
    for where, item in entries:
        if not isinstance(item, dict):
            raise AnnotationError(f"{where}: expected an object {{video_id | video | gif_name, "
                                  f"question, answer}}, got {type(item).__name__}")
        file = _qa_video_file(item)
        if file is None:
            raise AnnotationError(f"{where}: no video: a QA entry names its video by 'video_id', "
                                  f"'video' or 'gif_name' (fields {sorted(map(str, item))})")
        question = _qa_question(item, where)
        record = grouped.setdefault(file, {**_record(file), "questions": []})
        if not question["question_id"]:
            question["question_id"] = f"{record['video_id']}#{len(record['questions'])}"
        record["questions"].append(question)
    return list(grouped.values())


def _qa_json_entries(path: str):
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield f"{path}:{n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        raise AnnotationError(f"{path}:{n}: not JSON ({e})") from None
            return
        data = json.load(f)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{video_id | video, question, "
                              f"answer}} entries, got {type(data).__name__}")
    for i, item in enumerate(data):
        yield f"{path}: entry {i} (0-based)", item


# TGIF-QA FrameQA's question type codes (the release's dataset/README.md).
TGIF_FRAMEQA_TYPES = {"0": "object", "1": "number", "2": "color", "3": "location"}


def _qa_table_entries(path: str):
    fields, rows = _read_table(path)
    if "a1" in fields and "question" not in fields:
        raise AnnotationError(f"{path}: columns a1.. without a question are candidate "
                              f"sentences: a multiple-choice retrieval file, not QA (MSR-VTT's "
                              f"MSR_MC_test.csv: format 'mc')")
    for line, row in rows:
        if row.get("gif_name") and row.get("type"):
            row["type"] = TGIF_FRAMEQA_TYPES.get(row["type"], row["type"])
        yield f"{path}:{line}", row


def read_qa(path: str) -> list[dict]:
    """Open-ended QA annotations (module docstring, format qa): one record per video."""
    if path.endswith((".json", ".jsonl")):
        return _group_questions(_qa_json_entries(path))
    return _group_questions(_qa_table_entries(path))


MC_CANDIDATES = ("a1", "a2", "a3", "a4", "a5")


def read_mc(path: str) -> list[dict]:
    """MSR-VTT multiple choice (module docstring, format mc): one record per row."""
    fields, rows = _read_table(path)
    missing = [c for c in (*MC_CANDIDATES, "answer") if c not in fields]
    if missing or not {"video_id", "vid_key"} & set(fields):
        raise AnnotationError(f"{path}: a multiple-choice table needs the columns vid_key or "
                              f"video_id, {', '.join(MC_CANDIDATES)} and answer; the header has "
                              f"{fields}")
    out = []
    for line, row in rows:
        video_id = row.get("video_id") or ""
        if not video_id and (row.get("vid_key") or "").startswith("msr"):
            video_id = "video" + row["vid_key"][3:]
        candidates = [row.get(c) or "" for c in MC_CANDIDATES]
        answer = row.get("answer") or ""
        if not video_id or not all(candidates) or answer not in ("0", "1", "2", "3", "4"):
            raise AnnotationError(f"{path}:{line}: expected a video (vid_key msr<n> or video_id), "
                                  f"5 non-empty candidates and answer 0-4; got video "
                                  f"{video_id!r}, candidates {candidates}, answer {answer!r}")
        out.append({**_record(f"{video_id}.mp4", -1, candidates, video_id),
                    "answer_index": int(answer)})
    return out


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
    if fmt == "qa":
        return read_qa(path)
    if fmt == "mc":
        return read_mc(path)
    raise AnnotationError(f"unknown annotation format {fmt!r}; choose one of {FORMATS}")
