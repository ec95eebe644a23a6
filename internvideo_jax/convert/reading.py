"""Reading released checkpoints: what a file is, unpickling it safely, and which of its entries
holds the weights.

Released files are rarely a bare state dict. VideoMAE's `save_model` stores
{'model', 'optimizer', 'epoch', 'scaler', 'args' (an argparse.Namespace), 'model_ema'};
UniFormerV2's {'model_state', 'optimizer_state', 'epoch', 'cfg'}; Lightning {'state_dict', ...};
torch.compile prefixes every key with `_orig_mod.`, DistributedDataParallel with `module.`.

- `load_torch` unpickles with torch's weights-only loader, allowing the known harmless objects
  (SAFE_GLOBALS: argparse.Namespace, pathlib paths, NumPy scalars and arrays); any other object
  is refused, named, with `--trust-checkpoint` (a full unpickle, which can run code) as the opt-in.
- `choose_weights` takes the state dict out of such a dict: `--weights NAME` or the first of
  WEIGHT_ENTRIES present, and says which was taken and what else the file holds.
- `strip_wrappers` removes `module.` / `_orig_mod.` when every key carries one, in any nesting.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import re
import struct
import zipfile

import numpy as np

from internvideo_jax.convert.common import (ConvertUserError, NotACheckpoint, SourceNotFound,
                                           UsageError)

ACCEPTED = ("convert reads .pth/.pt/.pyth/.ckpt files written by torch.save, .safetensors files "
            "and HF transformers directories (config.json + *.safetensors or pytorch_model*.bin)")
# Entries that hold a model's state dict, in the order one is taken when --weights is not given
# (the EMA copy only when asked for, or when it is the only one).
WEIGHT_ENTRIES = ("model", "module", "state_dict", "model_state", "model_ema", "state_dict_ema")
# Prefixes that wrappers put on every key: DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class UntrustedCheckpoint(ConvertUserError, ValueError):
    """The file pickles an object the weights-only loader does not allow."""


def _numpy_globals() -> list:
    """NumPy objects that pickled scalars and arrays refer to, under the names NumPy 1 and 2 wrote
    (numpy.core.* before 2.0, numpy._core.* since)."""
    from numpy._core import multiarray
    out = [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray.scalar, f"{module}.scalar"),
                (multiarray._reconstruct, f"{module}._reconstruct")]
    # dtype classes (numpy.dtypes.Float64DType, ...): what np.dtype('float64') pickles as
    out += [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUV"]
    return out


def safe_globals() -> list:
    """What a released checkpoint may pickle beside its tensors without running code: plain
    containers of values, nothing with behaviour."""
    import codecs
    return [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath,
            pathlib.PureWindowsPath, codecs.encode, set, frozenset, slice, complex, range,
            *_numpy_globals()]


def _unsafe_names(path: str, error: Exception) -> list[str]:
    """The globals in `path` the weights-only loader would refuse (beyond safe_globals())."""
    import torch
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: read the name off the error
        names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    allowed = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1]
               for g in safe_globals()}
    return sorted(set(names) - allowed) or names


def load_torch(path: str, trust: bool = False):
    """torch.load(path) on the CPU. Weights-only (no code runs) with safe_globals() allowed;
    trust=True (--trust-checkpoint) unpickles everything, for files from a source you trust."""
    import pickle

    import torch
    # Not memory-mapped on purpose: each tensor's storage is freed as soon as its converted copy
    # exists (cmd_import), where a mapping would stay resident until the very end.
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise NotACheckpoint(f"{path}: a truncated torch file (it ends early)") from None
    except pickle.UnpicklingError as e:
        names = _unsafe_names(path, e)
        if not names:
            raise NotACheckpoint(f"{path}: the torch file does not unpickle ({e})") from None
        raise UntrustedCheckpoint(
            f"{path} pickles objects other than tensors and plain values: "
            f"{', '.join(names)}. Unpickling them can run code, so they are refused. If the file "
            f"comes from a source you trust, add --trust-checkpoint (a full unpickle; the "
            f"classes must be importable here); or re-save only its state dict: "
            f"torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth').") \
            from None


def _looks_like(head: bytes) -> str:
    """What a file that is no checkpoint seems to be, from its first bytes (for the message)."""
    if not head:
        return "an empty file"
    for magic, what in ((b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
                        (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"),
                        (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"),
                        (b"\x1f\x8b", "a gzip file"), (b"GIF8", "a GIF image")):
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI video"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as e:
            if e.start >= len(head) - 3:  # a character cut by the end of the sniffed bytes
                return "a text file"
    return "a file of an unknown format"


def sniff_checkpoint(path: str) -> str:
    """'safetensors' or 'torch' (a torch.save zip archive or legacy pickle) by the file's content,
    whatever its name; NotACheckpoint (one line: what it seems to be, what is accepted) for
    anything else, SourceNotFound for a path that does not exist."""
    if not os.path.exists(path):
        raise SourceNotFound(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise NotACheckpoint(f"{path} is a directory: this reads one checkpoint file "
                             f"(.pth/.pt/.pyth/.ckpt written by torch.save, or .safetensors)")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    looks = _looks_like(head)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            names, looks = [], "a damaged or truncated zip archive"
        else:
            looks = "a zip archive that is not a torch.save one (no data.pkl in it)"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
    elif head.startswith(b"\x80") and 2 <= head[1] <= 5:  # pickle protocol 2-5: legacy torch.save
        return "torch"
    raise NotACheckpoint(f"{path} is not a PyTorch checkpoint (it looks like {looks}); "
                         f"{ACCEPTED}")


def read_torch_file(path: str, trust: bool = False) -> dict:
    """A checkpoint file's top-level dict (a state dict, or a dict holding one)."""
    if sniff_checkpoint(path) == "safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            return load_file(path)
        except SafetensorError as e:
            raise NotACheckpoint(f"{path}: a damaged safetensors file ({e})") from None
    checkpoint = load_torch(path, trust)
    if not isinstance(checkpoint, dict):
        raise NotACheckpoint(f"{path}: a torch file holding a {type(checkpoint).__name__}, not a "
                             f"state dict (a dict of tensors)")
    return checkpoint


def read_hf_dir(path: str) -> tuple[dict, dict]:
    """(state dict, config.json) of an HF transformers model directory."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SourceNotFound(f"{path}: a directory without config.json, so not an HF "
                             f"transformers directory; {ACCEPTED}")
    with open(os.path.join(path, "config.json")) as f:
        try:
            config = json.load(f)
        except ValueError as e:
            raise NotACheckpoint(f"{path}: config.json is not JSON ({e})") from None
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) or sorted(
        glob.glob(os.path.join(path, "pytorch_model*.bin")))
    if not files:
        raise SourceNotFound(f"{path}: no *.safetensors or pytorch_model*.bin weights")
    sd = {}
    for f in files:
        sd.update(read_torch_file(f))
    return sd, config


def _is_tensor(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(_is_tensor(v) for v in value.values())


def _describe(value) -> str:
    if _is_state_dict(value):
        return f"a state dict of {len(value)} tensors"
    if _is_tensor(value):
        return f"a tensor {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def choose_weights(checkpoint: dict, wanted: str = "") -> tuple[dict, str]:
    """(the state dict, a line saying what was taken) from a checkpoint file's top-level dict.

    A dict of tensors is the state dict itself (mostly: a few scalars beside the tensors, as some
    files have, are left out and listed). Otherwise the entry `wanted` (--weights), or the first
    of WEIGHT_ENTRIES that holds a state dict."""
    entries = {k: v for k, v in checkpoint.items() if isinstance(v, dict) and
               any(_is_tensor(x) for x in v.values())}
    tensors = {k: v for k, v in checkpoint.items() if _is_tensor(v)}
    if wanted:
        if wanted not in checkpoint:
            raise UsageError(f"--weights {wanted}: the file has no entry {wanted!r}; it holds "
                             + "; ".join(f"{k!r} ({_describe(v)})" for k, v in checkpoint.items()))
        if wanted not in entries:
            raise UsageError(f"--weights {wanted}: that entry is {_describe(checkpoint[wanted])}, "
                             f"not a state dict")
        chosen = wanted
    elif len(tensors) >= len(checkpoint) / 2 and tensors:  # a bare state dict
        others = sorted(set(checkpoint) - set(tensors))
        return tensors, (f"weights: the file's {len(tensors)} top-level tensors" +
                         (f" (left out, not tensors: {others})" if others else ""))
    else:
        present = [k for k in WEIGHT_ENTRIES if k in entries] or sorted(entries)
        if not present:
            raise NotACheckpoint("the file holds no state dict (no tensors at its top level or "
                                 "under any entry); it has " + "; ".join(
                                     f"{k!r} ({_describe(v)})" for k, v in checkpoint.items()))
        chosen = present[0]
    others = [f"{k!r} ({_describe(v)}" + (f": --weights {k})" if k in entries else ")")
              for k, v in checkpoint.items() if k != chosen]
    state_dict = {k: v for k, v in checkpoint[chosen].items() if _is_tensor(v)}
    return state_dict, (f"weights: entry {chosen!r} ({len(state_dict)} tensors)" +
                        (f"; the file also holds {', '.join(others)}" if others else ""))


def strip_wrappers(state_dict: dict, prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict:
    """Remove the prefixes wrappers put on every key (`module.`, `_orig_mod.`, and the family's
    own, e.g. VideoMAE's `encoder.`-less `model.`), in any order and nesting
    (`module._orig_mod.blocks.0...`), as long as *every* key carries one."""
    changed = True
    while changed and state_dict:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in state_dict):
                state_dict = {k[len(p):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict
