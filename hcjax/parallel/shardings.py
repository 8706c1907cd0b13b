"""Shardings of params and state from their logical axis names.

``logical_to_mesh`` maps one tuple of logical names to a ``PartitionSpec`` under the rules table, for a given
array shape: a mesh axis is used at most once per array, and an axis that does not divide its dimension is
dropped (that dimension is then replicated over it), so one rules table serves the 13B and the tiny models.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from hcjax.parallel.rules import LOGICAL_RULES

Rules = Sequence[tuple[str, Any]]


def _as_tuple(axes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_mesh(names: Sequence[str | None], shape: Sequence[int], mesh, rules: Rules = LOGICAL_RULES
                    ) -> PartitionSpec:
    """The ``PartitionSpec`` of an array of ``shape`` whose dimensions carry the logical ``names``."""
    table = dict(rules)
    sizes = dict(mesh.shape)
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        chosen, degree = [], 1
        for axis in _as_tuple(table.get(name)) if name is not None else ():
            if axis not in sizes or axis in used or sizes[axis] == 1:
                continue
            if dim % (degree * sizes[axis]):
                continue
            chosen.append(axis)
            degree *= sizes[axis]
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def tree_shardings(abstract: Any, logical: Any, mesh, rules: Rules = LOGICAL_RULES) -> Any:
    """``NamedSharding`` per leaf of ``abstract`` (arrays or ``ShapeDtypeStruct``) from the matching tree of
    logical ``PartitionSpec`` s (``hcjax.models.logical_axes``)."""
    def one(x, names):
        return NamedSharding(mesh, logical_to_mesh(tuple(names), x.shape, mesh, rules))

    return jax.tree.map(one, abstract, logical, is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(cfg, mesh, rules: Rules = LOGICAL_RULES) -> Any:
    """``NamedSharding`` of every param of the model of ``cfg`` (any config ``hcjax.models.abstract_params``
    takes)."""
    from hcjax.models.params import abstract_params, logical_axes

    return tree_shardings(abstract_params(cfg), logical_axes(cfg), mesh, rules)


def with_shardings(tree: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` s of ``tree`` 's leaves carrying the matching ``shardings`` (what a lowering for a mesh
    or a sharded restore takes)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def activation_rules(rules: Rules = LOGICAL_RULES):
    """The context in which the models' ``with_logical_constraint`` s follow ``rules``."""
    return nn.logical_axis_rules(rules)
