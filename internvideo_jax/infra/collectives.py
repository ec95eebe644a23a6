"""What a compiled step communicates: a census of the collectives in XLA's optimised HLO text.

The fit planner (plan.py) compiles the train step for a TPU topology and reads the optimised
module back (XLA's `after_optimizations.txt` dump); `census` lists every collective it finds,
grouped by kind, element type and the mesh axes its groups span, with two byte counts per chip
and step:

  full_bytes   the size of the whole (unsharded) tensors: what an all-gather produces, what a
               reduce-scatter or an all-reduce reduces. For FSDP this is the parameter (gather)
               or gradient (reduce-scatter) bytes, in the dtype the wire really carries.
  ring_bytes   what one chip sends (= receives) under ring algorithms over a group of n chips:
               all-gather and reduce-scatter (n-1)/n x full, all-reduce 2 (n-1)/n x full,
               all-to-all (n-1)/n x full, collective-permute 1 x full. Divide by a link's
               bandwidth for a lower bound on the step's communication time.

TPU compilers write a reduce-scatter as an all-reduce inside a fusion named `all-reduce-scatter`
whose result is the chip's slice; that counts as a reduce-scatter here. Across slices (multi-slice,
DCN) libtpu does not emit collectives but Megascale `send` instructions tagged with the transfer
(`_xla_megascale_transfer_type="ALL_REDUCE"`); each counts as a 'dcn all-reduce' (etc.) of the
sent array over the slices (axes 'slices (DCN)'). Collectives inside a while loop (scanned
layers, gradient accumulation, a windowed matmul's ring of collective-permutes) are counted once
and flagged `in_loop`: the trip count is not in the text.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BITS = {"pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "f8e4m3fn": 8, "f8e5m2": 8,
         "s16": 16, "u16": 16, "f16": 16, "bf16": 16, "s32": 32, "u32": 32, "f32": 32,
         "s64": 64, "u64": 64, "f64": 64, "c64": 64, "c128": 128}
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")  # unindented header
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+("
                          + "|".join(KINDS) + r")(-start)?\(")
_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_CALLEES = re.compile(r"(?:calls|body|condition|to_apply)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_MEGASCALE_SEND = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+send\(.*"
                             r"_xla_megascale_transfer_type=\"?([A-Z_]+)")


def _shapes(type_text: str, drop_scalars: bool = False) -> list[tuple[str, int]]:
    """(element type, bytes) of every array shape in an HLO result type (tuple or not);
    drop_scalars leaves out rank-0 entries (an async -start's u32[] context values)."""
    out = []
    for dtype, dims in _SHAPE.findall(type_text):
        if dtype not in _BITS or (drop_scalars and not dims):
            continue
        n = math.prod(int(d) for d in dims.split(",") if d)
        out.append((dtype, n * _BITS[dtype] // 8))
    return out


def _iota(dims: str, perm: str | None) -> np.ndarray:
    """XLA's iota device list `[d0,d1,...]T(p0,p1,...)`: arange reshaped, then transposed."""
    shape = [int(d) for d in dims.split(",")]
    ids = np.arange(math.prod(shape)).reshape(shape)
    return ids.transpose([int(p) for p in perm.split(",")]) if perm else ids


def replica_groups(line: str) -> list[list[int]] | None:
    """The device groups of one collective instruction, as lists of device ids (positions in the
    computation's device assignment), from any of XLA's spellings: explicit `{{0,1},{2,3}}`,
    iota `[2,4]<=[4,2]T(1,0)`, the mesh form `mesh['axis_0'=2,'axis_1'=4], device_ids=(...)
    {'axis_1'}`, or a collective-permute's `source_target_pairs`. None where the line names no
    groups (one group of every device) or uses a spelling this parser does not know (sub-axes)."""
    m = re.search(r"replica_groups=\{(\{[0-9,{}\s]*\})\}", line)
    if m:
        return [[int(i) for i in g.split(",") if i.strip()]
                for g in re.findall(r"\{([0-9,\s]*)\}", m.group(1))]
    m = re.search(r"replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?", line)
    if m:
        group_shape = [int(d) for d in m.group(1).split(",")]
        return _iota(m.group(2), m.group(3)).reshape(-1, group_shape[-1]).tolist()
    m = re.search(r"replica_groups=mesh\[([^\]]*)\](?:,\s*device_ids=\(\[([0-9,]+)\]"
                  r"(?:T\(([0-9,]+)\))?\))?\s*\{([^}]*)\}", line)
    if m:
        sizes = {a: int(n) for a, n in re.findall(r"'([^']+)'=(\d+)", m.group(1))}
        axes = re.findall(r"'([^']+)'(:?)", m.group(4))
        if any(sub for _, sub in axes):
            return None  # a sub-axis ('axis_1':(2)2): not parsed
        names = list(sizes)
        ids = (_iota(m.group(2), m.group(3)).ravel() if m.group(2)
               else np.arange(math.prod(sizes.values())))
        grid = ids.reshape([sizes[a] for a in names])
        inner = [names.index(a) for a, _ in axes]
        outer = [i for i in range(len(names)) if i not in inner]
        group = math.prod(sizes[a] for a, _ in axes)
        return grid.transpose(outer + inner).reshape(-1, group).tolist()
    m = re.search(r"source_target_pairs=\{(.*?)\}\}", line)
    if m:
        pairs = re.findall(r"\{?([0-9]+,[0-9]+)", m.group(1))
        return [[int(i) for i in pair.split(",")] for pair in pairs]
    return None


def mesh_axes_of(groups: list[list[int]] | None, mesh_shape: dict[str, int] | None) -> str:
    """The mesh axes along which the devices of a group differ, e.g. 'fsdp' or 'data+fsdp';
    device id i sits at mesh coordinate unravel_index(i, mesh shape) (jit's device assignment is
    the mesh's devices in row-major order). 'all devices' without groups."""
    if groups is None:
        return "all devices"
    if not mesh_shape:
        return f"groups of {len(groups[0])}"
    names, shape = list(mesh_shape), list(mesh_shape.values())
    varying = set()
    for g in groups:
        coords = np.array(np.unravel_index(np.asarray(g), shape))  # (axes, members)
        varying.update(names[i] for i in range(len(names)) if len(set(coords[i])) > 1)
    return "+".join(a for a in names if a in varying) or "none"


def _loop_computations(calls: dict[str, set[str]], bodies: set[str]) -> set[str]:
    """Every computation reachable from a while loop's body or condition."""
    seen, todo = set(), list(bodies)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls.get(name, ()))
    return seen


def census(hlo_text: str, mesh_shape: dict[str, int] | None = None,
           slices: int = 1) -> list[dict]:
    """Collectives of an optimised HLO module, one row per (kind, dtype, mesh axes, in_loop):
    {'kind', 'dtype', 'axes', 'group_size', 'in_loop', 'count', 'full_bytes', 'ring_bytes'}
    (bytes per chip and step: see the module docstring), largest full_bytes first. mesh_shape
    ({axis name: size}, in the mesh's order) names the axes a collective spans; slices is the
    group size of the cross-slice (DCN) transfers."""
    computation, found = "", []
    calls: dict[str, set[str]] = defaultdict(set)
    loop_roots: set[str] = set()
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and not line[:1].isspace():
            computation = header.group(1)
            continue
        calls[computation].update(_CALLEES.findall(line))
        for branches in _BRANCHES.findall(line):
            calls[computation].update(b.strip().lstrip("%") for b in branches.split(","))
        if " while(" in line:  # its callees are the loop's condition and body
            loop_roots.update(_CALLEES.findall(line))
        m = _INSTRUCTION.match(line)
        if m:
            found.append((computation, m.group(2), bool(m.group(3)), m.group(1), line))
        m = _MEGASCALE_SEND.match(line)
        if m:  # (data, context, token): the data array only
            kind = "dcn " + m.group(2).lower().replace("_", "-")
            found.append((computation, kind, False, _SHAPE.search(m.group(1)).group(0), line))
    in_loop = _loop_computations(calls, loop_roots)
    devices = math.prod(mesh_shape.values()) if mesh_shape else 0

    rows: dict[tuple, dict] = {}
    for comp, kind, is_start, type_text, line in found:
        shapes = _shapes(type_text, drop_scalars=is_start)
        groups = replica_groups(line)
        n = len(groups[0]) if groups else devices
        axes = mesh_axes_of(groups, mesh_shape)
        if kind == "collective-permute":
            n = 2
        elif kind.startswith("dcn "):
            n, axes = slices, "slices (DCN)"
        if is_start and kind in ("all-gather", "collective-permute", "all-to-all"):
            shapes = shapes[len(shapes) // 2:]  # (operands..., results...): the results
        if kind == "all-reduce" and comp.startswith("all-reduce-scatter"):
            kind = "reduce-scatter"  # TPU: all-reduce + this chip's slice, fused
        elif kind == "reduce-scatter":
            shapes = [(dt, b * n) for dt, b in shapes]  # the result is one chip's slice
        for dtype, full in shapes:
            key = (kind, dtype, axes, comp in in_loop)
            row = rows.setdefault(key, {"kind": kind, "dtype": dtype, "axes": axes,
                                        "group_size": n, "in_loop": comp in in_loop,
                                        "count": 0, "full_bytes": 0, "ring_bytes": 0.0})
            row["count"] += 1
            row["full_bytes"] += full
            share = (n - 1) / n if n > 1 else 0.0
            row["ring_bytes"] += full * {"all-reduce": 2 * share, "dcn all-reduce": 2 * share,
                                         "collective-permute": 1.0}.get(kind, share)
    return sorted(rows.values(), key=lambda r: -r["full_bytes"])


def describe(rows: list[dict]) -> list[str]:
    """One line per census row, e.g. 'all-gather bf16 over fsdp (64 chips): 129 ops, full 1.203
    GiB, ring 1.184 GiB per chip'."""
    lines = []
    for r in rows:
        loop = "; inside a loop: times its trip count" if r["in_loop"] else ""
        unit = "slices" if r["kind"].startswith("dcn ") else "chips"
        lines.append(f"{r['kind']} {r['dtype']} over {r['axes']} ({r['group_size']} {unit}): "
                     f"{r['count']} ops, full {r['full_bytes'] / 2**30:.3f} GiB, ring "
                     f"{r['ring_bytes'] / 2**30:.3f} GiB per chip{loop}")
    return lines
