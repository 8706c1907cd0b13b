"""Device meshes with the four hcjax axes, and the degree of an axis of the mesh in context.

A mesh is put in context with ``jax.set_mesh(mesh)`` (as a context manager or a global setter); Flax's logical
constraints and hcjax's sequence parallelism both read it from there (``jax.sharding.get_abstract_mesh``).
"""

from __future__ import annotations

from typing import Sequence

import jax
from jax.sharding import AxisType

MESH_AXES = ("data", "fsdp", "tensor", "sequence")


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, sequence: int = 1,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A mesh with axes ``data, fsdp, tensor, sequence`` (sizes as given; their product must equal the number of
    devices used). Axes are ``Auto`` (the compiler propagates shardings; ``shard_map`` makes an axis manual)."""
    sizes = (data, fsdp, tensor, sequence)
    devices = list(jax.devices() if devices is None else devices)
    n = 1
    for s in sizes:
        n *= s
    if min(sizes) < 1 or n != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} x sequence={sequence} = {n} devices, "
                         f"but {len(devices)} devices are given")
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes), devices=devices)


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
