"""The accelerators we know, one row each: jax's device_kind, the TPU topology prefix, dense bf16
peak TFLOP/s and HBM GiB per device. flops.py (MFU) and plan.py (does it fit) read this table.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
    kind: str  # jax's device_kind (v5p reports itself as 'TPU v5', v5e as 'TPU v5 lite')
    topology: str | None  # the TPU topology prefix ('v5p' in 'v5p:4x4x4'), None for GPUs
    peak_tflops: float  # dense bf16, per device
    hbm_gib: float  # per device


CHIPS = (
    Chip("TPU v4", "v4", 275.0, 32),
    Chip("TPU v5", "v5p", 459.0, 95),
    Chip("TPU v5 lite", "v5e", 197.0, 16),
    Chip("TPU v6 lite", "v6e", 918.0, 32),
    Chip("NVIDIA H100 80GB HBM3", None, 989.0, 80),
    Chip("NVIDIA H100", None, 989.0, 80),
    Chip("NVIDIA H200", None, 989.0, 141),
    Chip("NVIDIA A100-SXM4-80GB", None, 312.0, 80),
    Chip("NVIDIA A100-SXM4-40GB", None, 312.0, 40),
)


def by_kind(kind: str) -> Chip | None:
    """The chip of a jax device_kind: exact first ('TPU v5' is a prefix of 'TPU v5 lite'), then
    a GPU name with a suffix (memory, form factor)."""
    for chip in CHIPS:
        if chip.kind == kind:
            return chip
    for chip in CHIPS:
        if chip.kind.startswith("NVIDIA") and kind.startswith(chip.kind):
            return chip
    return None


def by_topology(prefix: str) -> Chip | None:
    """The chip of a TPU topology prefix ('v5p')."""
    return next((c for c in CHIPS if c.topology == prefix), None)
