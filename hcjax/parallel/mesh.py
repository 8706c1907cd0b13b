"""Device meshes with the four hcjax axes, and the degree of an axis of the mesh in context.

A mesh is put in context with ``jax.set_mesh(mesh)`` (as a context manager or a global setter); Flax's logical
constraints and hcjax's sequence parallelism both read it from there (``jax.sharding.get_abstract_mesh``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType

MESH_AXES = ("data", "fsdp", "tensor", "sequence")


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, sequence: int = 1,
              devices: Sequence[jax.Device] | None = None, *, dcn_data: int = 1, dcn_fsdp: int = 1,
              dcn_tensor: int = 1, dcn_sequence: int = 1) -> jax.sharding.Mesh:
    """A mesh with axes ``data, fsdp, tensor, sequence``; ``fsdp=-1`` takes the devices the other degrees leave.
    The first four sizes are per slice (ICI); the
    ``dcn_*`` degrees multiply them across slices (multi-slice TPU pods: keep ``tensor`` and ``sequence`` inside
    a slice and put ``data`` or ``fsdp`` over DCN). The product of all degrees must equal the number of devices.
    Axes are ``Auto`` (the compiler propagates shardings; ``shard_map`` makes an axis manual)."""
    dcn = (dcn_data, dcn_fsdp, dcn_tensor, dcn_sequence)
    devices = list(jax.devices() if devices is None else devices)
    if fsdp == -1:
        fsdp = max(len(devices) // (data * tensor * sequence * math.prod(dcn)), 1)
    ici = (data, fsdp, tensor, sequence)
    n = math.prod(ici) * math.prod(dcn)
    if min(ici + dcn) < 1 or n != len(devices):
        degrees = " x ".join(f"{a}={i}" + (f"*{d}" if d > 1 else "") for a, i, d in zip(MESH_AXES, ici, dcn))
        raise ValueError(f"mesh {degrees} = {n} devices, but {len(devices)} devices are given; choose degrees "
                         f"whose product is {len(devices)}")
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if math.prod(dcn) == 1:
        try:
            return jax.make_mesh(ici, MESH_AXES, axis_types=axis_types, devices=devices)
        except NotImplementedError:  # e.g. an axis of 8 on a 4x4x4 torus: split a physical axis
            grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
            return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) != math.prod(dcn):
        raise ValueError(f"dcn degrees {dcn} make {math.prod(dcn)} slices, but the devices come from {len(slices)} "
                         "slice(s); set the dcn_* degrees to the number of slices")
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def context_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set by ``jax.set_mesh`` (abstract inside ``jit``), or None."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def axis_degree(axis: str, mesh=None) -> int:
    """Size of ``axis`` in ``mesh`` (default: the mesh in context); 1 without a mesh or without that axis."""
    mesh = context_mesh() if mesh is None else mesh
    if mesh is None or axis not in mesh.axis_names:
        return 1
    return int(dict(mesh.shape)[axis])
