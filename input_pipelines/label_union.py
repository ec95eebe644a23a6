"""The union label space of several classification datasets (Kinetics-710 from K400/600/700).

Kinetics-710 (K710, "LabeledHybrid"), the label space of VideoMAE V2's supervised
post-pretraining, UniFormerV2's and UMT's K710 stage, is the union of the Kinetics-400, -600 and
-700 classes with the same action counted once: 400 + 218 new in K600 + 92 new in K700 = 710 (the
reference's lists, which already carry the renames below). Its checkpoints are evaluated on one
release by keeping that release's columns of the 710 logits (the reference converts the head:
weights[to_union], bias[to_union]).

Matching names (`class_key`): two names are the same class when their keys are equal, the key
being the name case-folded, '_' read as a space, '(' and ')' dropped and runs of whitespace made
one space ('passing american football (not in game)' = 'passing_American_football_(not_in_game)'
= 'passing American football not in game'); and, before that, a name listed in the aliases
(old name -> the name it is counted as, both compared by key; per source, or for all) is read as
its target. KINETICS_RENAMES, the default, reproduce the reference's K710: the K400 names that
K600/K700 renamed and the classes VideoMAE V2 merged (its k710_identical_label_merge.json), with
the reference's lists as the arbiter where that file and its lists disagree (see the table).
Two classes of one list that end up with one key are an error, as is an empty list.

Order (`build_union`): the classes of the first list in its order, then each further list's
classes not seen before, in that list's order: the first list's indices are kept (union index =
K400 index for k400,k600,k700: the 710 -> 400 map is the first 400 columns, as UniFormerV2's K710
heads are laid out). The union's spelling of a class is that of the last list holding it (the
newest release's, as in the reference's K710 list). VideoMAE V2's shipped
label_map_k710.txt holds the same 710 classes in another order (K400's classes, then K700-only,
then K600-and-K700, then K600-only ones, shuffled within each block: a Python set's order, which
no rule reproduces): give that file as `order` (--order) to adopt its order and spelling (it must
hold each union class once, by key), e.g. to evaluate its released K710 checkpoints.

Maps (`LabelUnion`): to_union[source][i] = the union index of the source's class i (the
reference's label_710to400.json: scores[:, to_union] are the source's columns, `subset_scores`);
from_union[source][u] = the source index of union class u, -1 where the source lacks it.

CLI (python -m input_pipelines.label_map ...):
  union --labels k400.txt,k600.txt,k700.txt [--names k400,k600,k700] --out k710/ [--order FILE]
        [--aliases kinetics|none|FILE.json] [--overwrite]
      writes k710/labels.txt (the union names, one a line: data.labels of a union-trained
      classifier), k710/maps.json (names, fingerprints, to_union / from_union per source) and
      k710/source_<name>.txt (each source's names as read: the labels its annotation files are
      read with under eval.label_subset).
  relabel --map k710/maps.json --source k400 --annotations in.csv --out out.csv [--format
        list|csv] [--overwrite]
      rewrites an annotation file of a source (our `list` or `csv` format, input_pipelines/
      annotations.py) into union indices: list labels and csv label_id / label columns (integer
      source indices or class names of the source) become union indices; everything else is
      kept as it is.
A source's label file is data.labels' format: one name a line, or a JSON {name: index}.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import sys

import numpy as np

from input_pipelines import annotations, label_map

# Old Kinetics names -> the names K710 counts them as, by source ('*': every source; a source's own
# entries override; the per-source ones apply to sources named k400, k600, k700). Read off
# VideoMAE V2's K710 lists (its label_map_k400.txt is K400's list in K400's order with these names
# put in at their indices; its k710_identical_label_merge.json lists the pairs): K400 names that
# the later releases renamed, four merges of related classes made for K710 (picking fruit, skiing
# (not slalom or crosscountry), drinking, sniffing), and 'hugging' / 'opening bottle', which the
# reference's K400 list names 'hugging baby' / 'opening wine bottle' but its K600/K700 lists
# '(not baby)' / '(not wine)'. 'throwing ball' stays a class of its own (the reference keeps it
# beside 'throwing ball (not baseball or American football)', against its merge file).
KINETICS_RENAMES = {
    "*": {
        "balloon blowing": "inflating balloons",
        "changing wheel": "changing wheel (not on bike)",
        "cooking sausages": "cooking sausages (not on barbeque)",
        "dying hair": "dyeing hair",
        "garbage collecting": "person collecting garbage",
        "making bed": "making the bed",
        "passing american football (not in game)": "passing American football (not in game)",
        "tying tie": "tying necktie",
        "picking fruit": "picking apples",
        "skiing (not slalom or crosscountry)": "skiing mono",
        "drinking": "sipping cup",
        "sniffing": "smelling feet",
    },
    "k400": {"hugging": "hugging baby", "opening bottle": "opening wine bottle"},
    "k600": {"hugging": "hugging (not baby)", "opening bottle": "opening bottle (not wine)"},
    "k700": {"hugging": "hugging (not baby)", "opening bottle": "opening bottle (not wine)"},
}

MAPS_FORMAT = "internvideo-jax label union 1"


def normalise(name: str) -> str:
    """The matching key of a name without aliases (module docstring)."""
    text = name.casefold().replace("_", " ").replace("(", " ").replace(")", " ")
    return " ".join(text.split())


def _key_table(pairs: dict[str, str], where: str) -> dict[str, str]:
    out = {}
    for old, new in pairs.items():
        if not isinstance(new, str):
            raise ValueError(f"aliases {where}: {old!r} -> {new!r} is not a name")
        key, target = normalise(old), normalise(new)
        if key != target:
            out[key] = target
    chained = sorted(k for k, v in out.items() if v in out)
    if chained:
        raise ValueError(f"aliases {where}: {chained} point at names that are aliases "
                         f"themselves; point them at the final names")
    return out


def alias_keys(aliases: dict | None, source: str = "") -> dict[str, str]:
    """{key of an old name: key of the name it is counted as} for `source`. aliases: a flat
    {old: new} for every source, or {'*': {old: new}, source: {old: new}, ...} (a source's own
    entries override '*')."""
    aliases = aliases or {}
    if not all(isinstance(v, dict) for v in aliases.values()):
        return _key_table(aliases, "")
    table = dict(aliases.get("*", {}))
    table.update(aliases.get(source, {}))
    return _key_table(table, f"of {source or '*'}")


def class_key(name: str, aliases: dict | None = None, source: str = "",
              keys: dict | None = None) -> str:
    """The key two names of the same class share (module docstring)."""
    keys = alias_keys(aliases, source) if keys is None else keys
    key = normalise(name)
    return keys.get(key, key)


@dataclasses.dataclass
class LabelUnion:
    names: list[str]                   # the union's class names, by union index
    sources: dict[str, list[str]]      # source -> its class names, by source index
    to_union: dict[str, list[int]]     # source -> (len(source),) union index of each class
    from_union: dict[str, list[int]]   # source -> (len(union),) source index or -1
    aliases: dict  # as build_union's

    @property
    def sha256(self) -> str:
        return label_map.fingerprint(self.names)

    def label_map(self, source: str | None = None, origin: str = "") -> dict:
        """{'names', 'sha256', 'source'} of the union (or of one source), as a classification
        task's label map."""
        names = self.names if source is None else self.sources[source]
        return {"names": list(names), "sha256": label_map.fingerprint(names),
                "source": origin or ("union" if source is None else f"union source {source}")}

    def source_key_index(self, source: str) -> tuple[dict[str, int], dict[str, str]]:
        """({class key: source index}, the alias keys) of one source."""
        keys = alias_keys(self.aliases, source)
        return {class_key(n, keys=keys): i for i, n in enumerate(self.sources[source])}, keys

    def to_json(self) -> dict:
        return {"format": MAPS_FORMAT,
                "union": {"names": self.names, "sha256": self.sha256},
                "aliases": self.aliases,
                "sources": {s: {"names": names, "sha256": label_map.fingerprint(names),
                                "labels": source_labels_file(s),
                                "to_union": self.to_union[s], "from_union": self.from_union[s]}
                            for s, names in self.sources.items()}}

    @classmethod
    def from_json(cls, data: dict, where: str = "maps") -> "LabelUnion":
        if data.get("format") != MAPS_FORMAT:
            raise ValueError(f"{where}: not a label union maps file (format "
                             f"{data.get('format')!r}, expected {MAPS_FORMAT!r}); write one with "
                             f"`python -m input_pipelines.label_map union`.")
        sources = data["sources"]
        return cls(list(data["union"]["names"]), {s: list(v["names"]) for s, v in sources.items()},
                   {s: [int(i) for i in v["to_union"]] for s, v in sources.items()},
                   {s: [int(i) for i in v["from_union"]] for s, v in sources.items()},
                   dict(data.get("aliases") or {}))


def source_labels_file(source: str) -> str:
    """The file (beside maps.json) holding a source's class names, one a line."""
    return f"source_{source}.txt"


def read_maps(path: str) -> LabelUnion:
    with open(path, encoding="utf-8") as f:
        return LabelUnion.from_json(json.load(f), path)


def _duplicates(names: list[str], keys: dict[str, str], what: str) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for name in names:
        key = class_key(name, keys=keys)
        if key in seen:
            clashes.append(f"{seen[key]!r} and {name!r}")
        seen.setdefault(key, name)
    if clashes:
        raise ValueError(f"{what}: classes that are one class by the matching rule (case, '_', "
                         f"parentheses, aliases): {clashes}. Fix the list, or pass other "
                         f"aliases (--aliases none / a JSON file).")


def build_union(lists: dict[str, list[str]], aliases: dict | None = None,
                order: list[str] | None = None) -> LabelUnion:
    """The union of `lists` ({source: class names}, in source order; module docstring: matching
    rule, order, maps). aliases: {old name: name it counts as}, or per source {'*': {...},
    source: {...}} (KINETICS_RENAMES for Kinetics sources named k400, k600, k700); order: the
    union's names in a given order (e.g. VideoMAE V2's label_map_k710.txt), which must hold
    every union class exactly once (its names are matched with the '*' aliases)."""
    if not lists:
        raise ValueError("no class lists to unite")
    aliases = dict(aliases or {})
    source_keys = {source: alias_keys(aliases, source) for source in lists}
    position: dict[str, int] = {}
    spelling: list[str] = []
    for source, names in lists.items():
        if not names:
            raise ValueError(f"{source}: the class list is empty")
        keys = source_keys[source]
        _duplicates(names, keys, source)
        for name in names:
            key = class_key(name, keys=keys)
            if key not in position:
                position[key] = len(spelling)
                spelling.append(name)
            else:
                spelling[position[key]] = name  # the last list's spelling
    if order is not None:
        keys = alias_keys(aliases, "*")
        _duplicates(order, keys, "--order")
        order_keys = [class_key(n, keys=keys) for n in order]
        extra = [n for n, k in zip(order, order_keys) if k not in position]
        given = set(order_keys)
        missing = [spelling[i] for k, i in position.items() if k not in given]
        if extra or missing:
            raise ValueError(f"--order does not hold the union's classes: not in any list "
                             f"{extra}; missing from it {missing}")
        position = {k: i for i, k in enumerate(order_keys)}
        spelling = list(order)
    to_union, from_union = {}, {}
    for source, names in lists.items():
        to_union[source] = [position[class_key(n, keys=source_keys[source])] for n in names]
        back = [-1] * len(spelling)
        for i, u in enumerate(to_union[source]):
            back[u] = i
        from_union[source] = back
    return LabelUnion(spelling, {s: list(n) for s, n in lists.items()}, to_union, from_union,
                      aliases)


def subset_scores(scores, to_union):
    """(..., U) union scores or logits -> (..., S) the source's columns, in source order (the
    reference's head conversion: logits[:, to_union]). On logits, a softmax after it is the
    source-only model's; on probabilities the ranking (top-k) is the same, their values are not
    renormalised."""
    return np.take(np.asarray(scores), np.asarray(to_union, np.int64), axis=-1)


@dataclasses.dataclass
class Subset:
    """An evaluation restricted to one source of a union (config eval.label_subset)."""
    path: str
    source: str
    union: LabelUnion

    @property
    def columns(self) -> np.ndarray:
        return np.asarray(self.union.to_union[self.source], np.int32)

    @property
    def spec(self) -> str:
        return f"{self.path}:{self.source}"

    @property
    def labels_path(self) -> str:
        """The source's class names (one a line, written by `union` beside maps.json): the
        labels the split's annotation file is read with (csv class names -> source indices)."""
        path = os.path.join(os.path.dirname(os.path.abspath(self.path)),
                            source_labels_file(self.source))
        if not os.path.exists(path):
            raise FileNotFoundError(f"eval.label_subset={self.spec}: {path} (the {self.source} "
                                    f"class names) is missing; write the maps again with "
                                    f"`python -m input_pipelines.label_map union`.")
        names = label_map.class_names(None, path)[0]
        if names != self.union.sources[self.source]:
            raise ValueError(f"{path} is not the {self.source} class list of {self.path}")
        return path


def parse_subset(spec: str) -> Subset | None:
    """eval.label_subset 'MAPS.json:SOURCE' -> Subset ('' -> None)."""
    if not spec:
        return None
    path, sep, source = spec.rpartition(":")
    if not sep or not path or not source:
        raise ValueError(f"eval.label_subset={spec!r}: expected MAPS.json:SOURCE, e.g. "
                         f"k710/maps.json:k400")
    union = read_maps(path)
    if source not in union.sources:
        raise ValueError(f"eval.label_subset={spec!r}: {path} has the sources "
                         f"{sorted(union.sources)}, not {source!r}")
    return Subset(path, source, union)


# ---- relabelling annotation files --------------------------------------------------------------

class RelabelError(annotations.AnnotationError):
    """An annotation file with labels that its source does not have (all of them listed)."""


def _raise_unknown(path: str, source: str, problems: dict[str, list[int]], size: int) -> None:
    if problems:
        shown = [f"{what} (line{'s' if len(lines) > 1 else ''} "
                 f"{', '.join(map(str, lines[:5]))}{', ...' if len(lines) > 5 else ''})"
                 for what, lines in sorted(problems.items())]
        raise RelabelError(f"{path}: {len(problems)} label(s) are not classes of {source} "
                           f"({size} classes): {'; '.join(shown)}. Nothing was written.")


def _union_label(raw: str, source: str, union: LabelUnion, lookup: tuple[dict, dict],
                 problems: dict, line: int) -> str:
    text = raw.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        if value == -1:
            return "-1"
        if 0 <= value < len(union.sources[source]):
            return str(union.to_union[source][value])
        problems.setdefault(f"index {value}", []).append(line)
        return text
    key_index, keys = lookup
    index = key_index.get(class_key(text, keys=keys))
    if index is None:
        problems.setdefault(f"{text!r}", []).append(line)
        return text
    return str(union.to_union[source][index])


def relabel_list(text: str, path: str, source: str, union: LabelUnion) -> str:
    """A `list` annotation file's text with each label (a source index) made the union index;
    comments, blank lines and the rest of each line kept."""
    lookup, problems, out = union.source_key_index(source), {}, []
    for n, line in enumerate(text.splitlines(), 1):
        body = line.strip()
        if not body or body.startswith("#"):
            out.append(line)
            continue
        fields, ok = annotations._split_list_line(body)
        if not ok:
            raise annotations.AnnotationError(
                f"{path}:{n}: expected 'path<TAB>label' with an integer label; got {body!r}")
        last = list(re.finditer(r"-?\d+", line))[-1]  # the label: the line's last field
        new = _union_label(fields[1], source, union, lookup, problems, n)
        out.append(line[:last.start()] + new + line[last.end():])
    _raise_unknown(path, source, problems, len(union.sources[source]))
    return "\n".join(out) + "\n"


LABEL_COLUMNS = ("label_id", "label")


def relabel_csv(text: str, path: str, source: str, union: LabelUnion) -> str:
    """A `csv` annotation file's text with its label_id / label columns (source indices or
    source class names) made union indices; other columns and the column order kept."""
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    fields = reader.fieldnames or []
    columns = [c for c in LABEL_COLUMNS if c in fields]
    if not rows or not columns:
        raise annotations.AnnotationError(f"{path}: expected a header with a label_id or label "
                                          f"column and rows under it; the header is {fields}")
    lookup, problems = union.source_key_index(source), {}
    for n, row in enumerate(rows, 2):
        for c in columns:
            if row.get(c) not in (None, ""):
                row[c] = _union_label(row[c], source, union, lookup, problems, n)
    _raise_unknown(path, source, problems, len(union.sources[source]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def relabel_file(annotations_path: str, out: str, union: LabelUnion, source: str,
                 fmt: str = "", overwrite: bool = False) -> int:
    """Rewrite a source's annotation file (fmt list | csv; '' = csv for .csv, else list) into
    union indices at `out`; refuses an existing `out` unless overwrite. Returns the rows."""
    if source not in union.sources:
        raise ValueError(f"--source {source!r}: the maps have the sources {sorted(union.sources)}")
    fmt = fmt or ("csv" if annotations_path.endswith(".csv") else "list")
    if fmt not in ("list", "csv"):
        raise ValueError(f"--format {fmt!r}: relabel reads the list and csv formats")
    _refuse_existing([out], overwrite)
    with open(annotations_path, encoding="utf-8", newline="") as f:
        text = f.read()
    new = (relabel_csv if fmt == "csv" else relabel_list)(text, annotations_path, source, union)
    return len(_write(out, new, check=lambda tmp: annotations.read(tmp, fmt)))


# ---- files and CLI -----------------------------------------------------------------------------

def _refuse_existing(paths: list[str], overwrite: bool) -> None:
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")


def _write(path: str, text: str, check=None):
    """Write `text` to `path` through a temporary file; check(tmp path), when given, must accept
    it first (its result is returned)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        result = check(tmp) if check is not None else None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return result


def read_aliases(spec: str) -> dict:
    """--aliases: kinetics (KINETICS_RENAMES) | none | a JSON file {old name: new name} or
    {'*': {old: new}, source: {old: new}, ...}."""
    if spec == "kinetics":
        return json.loads(json.dumps(KINETICS_RENAMES))
    if spec in ("none", ""):
        return {}
    with open(spec, encoding="utf-8") as f:
        data = json.load(f)
    flat = isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
    nested = isinstance(data, dict) and all(
        isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
        for v in data.values())
    if not (flat or nested):
        raise ValueError(f"--aliases {spec}: expected a JSON object {{old name: new name}} or "
                         f"{{source or '*': {{old name: new name}}}}")
    return data


SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_union(union: LabelUnion, out_dir: str, overwrite: bool = False) -> dict[str, str]:
    """out_dir/labels.txt (one union name a line), out_dir/maps.json and each source's class
    names, one a line, as out_dir/source_<source>.txt (read by eval.label_subset)."""
    bad = [s for s in union.sources if not SOURCE_NAME.match(s)]
    if bad:
        raise ValueError(f"source names {bad}: use letters, digits, '_', '.', '-' (--names)")
    paths = {"labels": os.path.join(out_dir, "labels.txt"),
             "maps": os.path.join(out_dir, "maps.json")}
    sources = {s: os.path.join(out_dir, source_labels_file(s)) for s in union.sources}
    _refuse_existing(list(paths.values()) + list(sources.values()), overwrite)
    _write(paths["labels"], "".join(n + "\n" for n in union.names))
    for s, path in sources.items():
        _write(path, "".join(n + "\n" for n in union.sources[s]))
    _write(paths["maps"], json.dumps(union.to_json(), indent=1, ensure_ascii=False) + "\n")
    return paths


def _warn_if_not_k710(union: LabelUnion) -> None:
    """Sources named k400, k600, k700 whose union is not 710 classes: name the classes of one
    source only (where a rename the aliases lack usually shows)."""
    if set(union.sources) != {"k400", "k600", "k700"} or len(union.names) == 710:
        return
    lonely = [f"{n!r} ({s})" for u, n in enumerate(union.names)
              for s in union.sources if sum(union.from_union[t][u] >= 0
                                            for t in union.sources) == 1
              and union.from_union[s][u] >= 0]
    print(f"warning: the union of k400, k600, k700 has {len(union.names)} classes, the "
          f"reference's Kinetics-710 710; classes of one source only ({len(lonely)}): "
          f"{', '.join(lonely[:40])}{' ...' if len(lonely) > 40 else ''}. A renamed class the "
          f"aliases do not know counts twice: add it with --aliases FILE.json.", file=sys.stderr)


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m input_pipelines.label_map",
        description="Union label spaces (Kinetics-710) and relabelled annotation files; "
                    "input_pipelines/label_union.py documents the rules.")
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("union", help="the union of class lists: labels.txt and maps.json")
    u.add_argument("--labels", required=True, help="comma-separated label files, in order")
    u.add_argument("--names", default="", help="comma-separated source names (default: the "
                                               "files' names without extension)")
    u.add_argument("--out", required=True, help="output directory")
    u.add_argument("--order", default="", help="a union label file whose order to adopt")
    u.add_argument("--aliases", default="kinetics", help="kinetics | none | FILE.json")
    u.add_argument("--overwrite", action="store_true")
    r = sub.add_parser("relabel", help="an annotation file of one source -> union indices")
    r.add_argument("--map", required=True, help="maps.json written by `union`")
    r.add_argument("--source", required=True)
    r.add_argument("--annotations", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--format", default="", choices=("", "list", "csv"))
    r.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "union":
            files = _split(args.labels)
            names = _split(args.names) or [os.path.splitext(os.path.basename(p))[0]
                                           for p in files]
            if len(names) != len(files) or len(set(names)) != len(names):
                raise ValueError(f"--names {names} must name each of the {len(files)} label "
                                 f"files once")
            lists = {n: label_map.class_names(None, p)[0] for n, p in zip(names, files)}
            order = label_map.class_names(None, args.order)[0] if args.order else None
            union = build_union(lists, read_aliases(args.aliases), order)
            paths = write_union(union, args.out, args.overwrite)
            _warn_if_not_k710(union)
            print(json.dumps({"classes": len(union.names), "sha256": union.sha256,
                              "sources": {s: len(v) for s, v in union.sources.items()},
                              **paths}))
        else:
            union = read_maps(args.map)
            rows = relabel_file(args.annotations, args.out, union, args.source, args.format,
                                args.overwrite)
            print(json.dumps({"rows": rows, "source": args.source, "out": args.out,
                              "classes": len(union.names), "sha256": union.sha256}))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
