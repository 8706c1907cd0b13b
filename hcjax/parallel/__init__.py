"""Sharding of hcjax models over a device mesh with axes ``data``, ``fsdp``, ``tensor``, ``sequence``.

* ``rules``: the logical axis names of params and activations;
* ``mesh``: ``make_mesh`` and the degree of an axis of the mesh in context (``jax.set_mesh``);
* ``sequence``: sequence parallelism of the DiT's joint attention over the ``sequence`` axis (the dispatch used by
  the DiT blocks, and the ``shard_map``), with the per-shard algorithms in ``ulysses`` (all-to-all over heads) and
  ``ring`` (K/V ring, online softmax from ``online_softmax``). Switched on by ``DiTConfig.sequence_parallel``.
"""

from hcjax.parallel.mesh import MESH_AXES, axis_degree, context_mesh, make_mesh
from hcjax.parallel.ring import ring_attention
from hcjax.parallel.sequence import joint_attention, sequence_parallel_attention
from hcjax.parallel.ulysses import check_degree, ulysses_attention

__all__ = [
    "MESH_AXES",
    "axis_degree",
    "check_degree",
    "context_mesh",
    "joint_attention",
    "make_mesh",
    "ring_attention",
    "sequence_parallel_attention",
    "ulysses_attention",
]
