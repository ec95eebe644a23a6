"""Pixel normalisation constants by name, on the [0, 1] scale, RGB order.

Which one a model needs is part of its preset: a wrong constant costs accuracy silently.
  imagenet: VideoMAE (pretraining and fine-tuning);
  kinetics: UniFormerV2 classification configs (0.45 / 0.225);
  clip:     the CLIP-based multimodal encoder.
"""
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "kinetics": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def get(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a named normalisation."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization {name!r}; choose one of {sorted(NORMALIZATIONS)}.")
    return NORMALIZATIONS[name]
