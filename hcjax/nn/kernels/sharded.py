"""Running a Pallas kernel under a mesh: XLA cannot partition a Mosaic / Triton custom call, so the kernel is
wrapped in ``shard_map`` over the batch (``data``, ``fsdp``) and head (``tensor``) axes of the ambient mesh
(``jax.set_mesh``) that are not manual already (inside the sequence-parallel ``shard_map`` only ``sequence`` is
manual). Without such axes the kernel is called as is."""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

from hcjax.parallel.mesh import context_mesh

BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def _kernel_axes(mesh, names) -> tuple[str, ...]:
    """The axes of ``names`` in ``mesh`` that split work (size > 1) and are not manual yet."""
    manual = jax.sharding.AxisType.Manual
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    return tuple(a for a in names if a in types and mesh.shape[a] > 1 and types[a] != manual)


def per_device(kernel: Callable, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """``kernel(q, k, v, segment_ids)`` on head-major ``[B, H, L, D]`` arrays, per device under a mesh (batch
    split over the data axes, heads over ``tensor``; the sequence is never split here)."""
    mesh = context_mesh()
    if mesh is None:
        return kernel(q, k, v, segment_ids)
    batch, heads = _kernel_axes(mesh, BATCH_AXES), _kernel_axes(mesh, (HEAD_AXIS,))
    if not batch and not heads:
        return kernel(q, k, v, segment_ids)
    spec = P(batch or None, heads[0] if heads else None)
    return jax.shard_map(kernel, mesh=mesh, in_specs=(spec, spec, spec, P(batch or None)), out_specs=spec,
                         axis_names=set(batch + heads), check_vma=False)(q, k, v, segment_ids)
