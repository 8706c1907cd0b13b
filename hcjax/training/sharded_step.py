"""The train step compiled for a mesh: explicit in / out shardings, the state donated, the mesh and the
logical axis rules in context while tracing (the DiT's activation constraints and sequence parallelism read
them)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from hcjax.parallel.mesh import axis_degree
from hcjax.parallel.rules import LOGICAL_RULES
from hcjax.parallel.shardings import with_shardings

BATCH_AXES = ("data", "fsdp")


def batch_sharding(mesh, global_batch: int) -> NamedSharding:
    """Samples over ``data`` x ``fsdp`` (each data-parallel group gets ``global_batch / (data * fsdp)``)."""
    groups = axis_degree("data", mesh) * axis_degree("fsdp", mesh)
    if global_batch % groups:
        raise ValueError(f"global batch {global_batch} does not split over data x fsdp = {groups} data-parallel "
                         f"groups; use a multiple of {groups}")
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def tree_batch_shardings(tree: Any, mesh, processes: int = 1) -> Any:
    """The batch sharding for every leaf of a batch (arrays or ``ShapeDtypeStruct`` s) holding
    ``1 / processes`` of the global batch."""
    sharding = batch_sharding(mesh, jax.tree.leaves(tree)[0].shape[0] * processes)
    return jax.tree.map(lambda _: sharding, tree)


@dataclasses.dataclass
class ShardedStep:
    """``step(state, batch, null_text)`` jit-compiled for ``mesh``; call it, or ``lower`` it for AOT."""

    fn: Callable
    mesh: Any
    state_shardings: Any
    rules: tuple = LOGICAL_RULES

    def __post_init__(self):
        def traced(state, batch, null_text):
            with nn.logical_axis_rules(self.rules):
                return self.fn(state, batch, null_text)

        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._jitted = jax.jit(traced, out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
        self._replicated = replicated

    def _shard_args(self, batch, null_text, processes: int = 1):
        return (tree_batch_shardings(batch, self.mesh, processes),
                jax.tree.map(lambda _: self._replicated, null_text))

    def __call__(self, state, batch: dict, null_text: dict):
        """``batch``: this host's share of the global batch (numpy), assembled into global arrays here."""
        batch_sh, null_sh = self._shard_args(batch, null_text, jax.process_count())
        batch = jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, x), batch, batch_sh)
        null_text = jax.device_put(null_text, null_sh)
        with jax.set_mesh(self.mesh):
            return self._jitted(state, batch, null_text)

    def lower(self, state, batch: dict, null_text: dict):
        """Lowers for abstract arguments: the global batch and state as ``ShapeDtypeStruct`` s (shardings are
        attached here)."""
        batch_sh, null_sh = self._shard_args(batch, null_text)
        state = with_shardings(state, self.state_shardings)
        batch, null_text = with_shardings(batch, batch_sh), with_shardings(null_text, null_sh)
        with jax.set_mesh(self.mesh):
            return self._jitted.lower(state, batch, null_text)
