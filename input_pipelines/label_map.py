"""The label map of a classification dataset (class index -> name) and its fingerprint.

A model's outputs mean nothing without the label map it was trained with: Kinetics lists ordered
differently, a labels file from another release, an annotation file whose sorted names differ from
the training file's. The map's SHA-256 is stored in every checkpoint and printed with every result,
and evaluation refuses a dataset whose map differs (internvideo_jax/evaluation/evaluate.py).

Where the names come from, in order: the TFDS dataset's ClassLabel feature (the demo dataset too),
the config's labels file (data.labels: a JSON {name: index} as SSv2's, or one name per line), else
the indices themselves ('0', '1', ...: 'unnamed', compared by class count only).

Union label spaces (Kinetics-710 from the K400/600/700 lists), their index maps and relabelled
annotation files: input_pipelines/label_union.py, whose CLI this module's is:
  python -m input_pipelines.label_map union --labels k400.txt,k600.txt,k700.txt \
      --names k400,k600,k700 --out k710/
  python -m input_pipelines.label_map relabel --map k710/maps.json --source k400 \
      --annotations train.csv --out k710/train_k400.csv
"""
from __future__ import annotations

import hashlib
import json


def class_names(source, labels_path: str = "", num_classes: int = 0) -> tuple[list[str], str]:
    """(names by index, where they came from)."""
    info = getattr(source, "dataset_info", None)
    feature = info.features["label"] if info is not None and "label" in info.features else None
    if feature is not None and getattr(feature, "names", None):
        return list(feature.names), f"tfds:{info.full_name}"
    if labels_path:
        with open(labels_path) as f:
            text = f.read()
        if labels_path.endswith(".json"):
            mapping = {k: int(v) for k, v in json.loads(text).items()}
            names = [""] * len(mapping)
            for name, index in mapping.items():
                if not 0 <= index < len(names) or names[index]:
                    raise ValueError(f"{labels_path}: indices are not 0..{len(names) - 1} "
                                     f"each used once (at {name!r} -> {index}).")
                names[index] = name
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        return names, f"file:{labels_path}"
    return [str(i) for i in range(num_classes)], "unnamed"


def fingerprint(names: list[str]) -> str:
    """SHA-256 (hex) of the ordered class names."""
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()


def check_same(stored: dict, current: dict, what: str) -> None:
    """Refuse `current` label map ({'names', 'sha256', 'source'}) unless it equals `stored`."""
    if stored.get("sha256") == current["sha256"]:
        return
    old, new = stored.get("names", []), current["names"]
    diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(old, new)) if a != b][:5]
    raise ValueError(
        f"The label map of {what} ({current['source']}, {len(new)} classes, sha256 "
        f"{current['sha256'][:12]}) differs from the checkpoint's ({stored.get('source')}, "
        f"{len(old)} classes, sha256 {str(stored.get('sha256'))[:12]}); first differences "
        f"(index: checkpoint vs data): {diff}. Evaluate with the label map the model was trained "
        f"with (data.labels / the same dataset), or fine-tune for this one.")


def main(argv: list[str] | None = None) -> int:
    """The label-space CLI (input_pipelines/label_union.py: union, relabel)."""
    from input_pipelines import label_union
    return label_union.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
