"""The device mesh, the one logical-to-mesh rules table, and placement of host batches.

Mesh axes:
  'data'   pure data parallelism (batch split, parameters replicated);
  'fsdp'   batch split AND parameters / optimizer state sharded (ZeRO-3 style);
  'tensor' attention heads and MLP hidden units split (Megatron style).
Every parameter and large activation names its dimensions logically (models/layers.py); RULES maps
those names onto mesh axes. Change the strategy by changing the mesh shape in the config, not code.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or axes, or None = replicated). The one table.
RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("patch", None),
    ("vocab", "tensor"),
    ("layers", None),  # the stacking axis of scanned layers
    # activations
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
)


def mesh_shape(mesh_config: dict, num_devices: int) -> tuple[int, int, int]:
    """Resolve {'data': -1, 'fsdp': 2, 'tensor': 1} against the device count (one -1 allowed);
    other keys (dcn_data) are not axes."""
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    unknown = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
    if len(unknown) > 1:
        raise ValueError(f"At most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}.")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split into a mesh with "
                             f"{dict(zip(MESH_AXES, sizes))}: the fixed axes multiply to {known}, "
                             f"which does not divide {num_devices}.")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices "
                         f"but {num_devices} are present: set config.mesh so the axes multiply to "
                         f"{num_devices} (use -1 for one axis to take the rest).")
    return tuple(sizes)


def granules(devices) -> list[list]:
    """Devices grouped by the slice they sit in (TPU multi-slice: `slice_index`; where every
    device reports one slice, e.g. CPUs and GPUs, each process is a granule), in granule order."""
    slice_ids = {getattr(d, "slice_index", 0) for d in devices}
    key = (lambda d: d.slice_index) if len(slice_ids) > 1 else (lambda d: d.process_index)
    groups: dict = {}
    for d in devices:
        groups.setdefault(key(d), []).append(d)
    return [groups[k] for k in sorted(groups)]


def hybrid_grid(groups: list[list], shape: tuple[int, int, int]) -> np.ndarray:
    """A (data, fsdp, tensor) device grid over `len(groups)` slices joined by DCN: the slices are
    the outer factor of 'data', so 'fsdp' and 'tensor' collectives (and the inner part of
    'data') stay on each slice's fast interconnect; only the data-parallel gradient reduction
    crosses DCN."""
    from jax.experimental import mesh_utils
    dcn = len(groups)
    data, fsdp, tensor = shape
    if data % dcn:
        raise ValueError(f"mesh.dcn_data={dcn} slices must divide mesh.data={data}: the slices "
                         f"are the outer factor of the data axis.")
    sizes = {len(g) for g in groups}
    if sizes != {data // dcn * fsdp * tensor}:
        raise ValueError(f"each of the {dcn} slices must hold data/dcn_data x fsdp x tensor = "
                         f"{data // dcn * fsdp * tensor} devices; they hold {sorted(sizes)}.")
    per_slice = [mesh_utils.create_device_mesh((data // dcn, fsdp, tensor), g,
                                               allow_split_physical_axes=True) for g in groups]
    return np.concatenate(per_slice, axis=0)  # (data, fsdp, tensor)


def make_mesh(mesh_config: dict, devices=None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh with Auto axis types (logical constraints need them).

    mesh_config['dcn_data'] (default 1): the number of slices (TPU multi-slice, or hosts joined by
    a data-centre network); 'data' is then split dcn_data ways across them (hybrid_grid)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_config, len(devices))
    dcn = int(mesh_config.get("dcn_data", 1))
    if dcn > 1:
        groups = granules(devices)
        if len(groups) != dcn:
            raise ValueError(f"mesh.dcn_data={dcn} but the {len(devices)} devices form "
                             f"{len(groups)} slice(s) (by slice_index, else by process): set "
                             f"mesh.dcn_data={len(groups)}.")
        return Mesh(hybrid_grid(groups, shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
    except NotImplementedError:  # e.g. fsdp=8 on a 4x4x4 torus: split a physical axis
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_shardings(boxed_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of (abstract) values boxed by nn.with_logical_partitioning."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, RULES)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batch dimension split over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble global arrays from each process's local slice of the batch.

    Every process passes its own (local_batch, ...) arrays; the global batch is the concatenation
    over processes in process order, split over the mesh's batch axes.
    """
    n = jax.process_count()
    out = {}
    for k, v in local_batch.items():
        global_shape = (v.shape[0] * n,) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v,
                                                        global_shape)
    return out


def bytes_per_device(tree: Any) -> dict:
    """{'total': bytes of the logical arrays, 'max_device': the most any one device holds,
    'min_device': the least}: how the shardings really split a tree of jax.Arrays (a replicated
    array counts fully on every device, an FSDP-sharded one by its shard)."""
    per_device: dict[Any, int] = {}
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        total += leaf.size * leaf.dtype.itemsize
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + \
                shard.data.size * shard.data.dtype.itemsize
    values = list(per_device.values()) or [0]
    return {"total": total, "max_device": max(values), "min_device": min(values)}


def describe_placement(name: str, tree: Any) -> str:
    """One line: total and per-device bytes of a tree, e.g. for params and optimizer state."""
    b = bytes_per_device(tree)
    share = b["max_device"] / b["total"] if b["total"] else 0.0
    return (f"{name}: {b['total'] / 2**20:,.1f} MiB in all, {b['max_device'] / 2**20:,.1f} MiB "
            f"on the fullest device ({100 * share:.1f}%)")
