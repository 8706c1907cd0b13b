"""A strict engine that fills a Flax param tree from a PyTorch state dict according to a plan.

A plan maps every param path to a ``Rule`` (or, for params stacked over layers, one ``Rule`` per layer). A rule
names its source tensors and how they become the param: ``vector`` (1-D, concatenated), ``linear``
(``[out, in]`` rows concatenated, then transposed to ``[in, out]``), ``conv`` (``[out, in, *kernel]`` to
``[*kernel, in, out]``, for 1-, 2- or 3-D kernels) or ``table`` (copied as it is: embedding tables).
Everything is checked on shapes before any data is touched: every source tensor is used, every param is
filled, every shape matches; otherwise one ``CheckpointMismatch`` lists all problems.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from hcjax.convert.io import to_numpy

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
    keys: tuple[str, ...]
    kind: str                            # "vector" | "linear" | "conv" | "table"
    parts: tuple[int, ...] | None = None  # sizes along torch axis 0 of each key, when several are concatenated
    swap_halves: bool = False             # exchange the two halves of torch axis 0 (diffusers' final layer)

    def source_shapes(self, target: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Shapes the source tensors must have for a param of shape ``target``."""
        if self.kind == "conv":
            *kernel, cin, cout = target
            return [(cout, cin, *kernel)]
        if self.kind == "table":
            return [tuple(target)]
        rows = target[-1]
        parts = self.parts or (rows,)
        if len(parts) != len(self.keys) or sum(parts) != rows:
            raise AssertionError(f"plan error: parts {parts} of {self.keys} do not add up to {rows}")
        if self.kind == "vector":
            return [(p,) for p in parts]
        if self.kind == "linear":
            return [(p, target[0]) for p in parts]
        raise AssertionError(f"plan error: unknown rule kind {self.kind!r}")

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if self.kind == "conv":
            n = arrays[0].ndim
            return np.transpose(arrays[0], (*range(2, n), 1, 0))
        if self.kind == "table":
            return arrays[0]
        x = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        if self.swap_halves:
            half = x.shape[0] // 2
            x = np.concatenate([x[half:], x[:half]], axis=0)
        return x.T if self.kind == "linear" else x


Plan = Mapping[Path, "Rule | Sequence[Rule]"]


class CheckpointMismatch(ValueError):
    """A state dict that does not fit the model; lists every missing, unexpected and mis-shaped key."""

    def __init__(self, missing: Sequence[str], unexpected: Sequence[str],
                 misshaped: Sequence[tuple[str, tuple, tuple]], context: str = ""):
        self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
        lines = [f"checkpoint does not match the model{context}:"]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing keys (the model needs them):")
            lines += [f"    {k}" for k in self.missing]
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected keys (the model has no place for them):")
            lines += [f"    {k}" for k in self.unexpected]
        if self.misshaped:
            lines.append(f"  {len(self.misshaped)} keys with the wrong shape:")
            lines += [f"    {k}: checkpoint {tuple(got)}, model expects {tuple(want)}" for k, got, want in
                      self.misshaped]
        lines.append("  Check that the preset matches the checkpoint (e.g. guidance embedding, conditioning "
                     "mechanisms) and that source='official'|'diffusers' names its key layout.")
        super().__init__("\n".join(lines))


def flatten(tree: Mapping, prefix: Path = ()) -> dict[Path, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(flat: Mapping[Path, Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _layer_rules(entry) -> tuple[list[Rule], bool]:
    return (list(entry), True) if isinstance(entry, (list, tuple)) else ([entry], False)


def apply_plan(plan: Plan, state_dict: Mapping[str, Any], targets: Mapping, dtype: Any,
               shapes_only: bool = False, context: str = "") -> dict:
    """Fills the param tree whose shapes are ``targets`` (a tree of ``ShapeDtypeStruct``) from ``state_dict``.

    Returns numpy arrays cast to ``dtype`` (or, with ``shapes_only``, the targets after all checks).
    """
    flat_targets = flatten(targets)
    if set(plan) != set(flat_targets):
        raise AssertionError(f"plan error: params without a rule {sorted(set(flat_targets) - set(plan))[:5]}, "
                             f"rules without a param {sorted(set(plan) - set(flat_targets))[:5]}")
    expected: dict[str, tuple] = {}
    for path, target in flat_targets.items():
        rules, stacked = _layer_rules(plan[path])
        shape = tuple(target.shape[1:] if stacked else target.shape)
        if stacked and len(rules) != target.shape[0]:
            raise AssertionError(f"plan error: {path} has {len(rules)} layer rules for {target.shape[0]} layers")
        for rule in rules:
            for key, want in zip(rule.keys, rule.source_shapes(shape)):
                if key in expected:
                    raise AssertionError(f"plan error: {key} used twice")
                expected[key] = want
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    misshaped = sorted((k, tuple(state_dict[k].shape), want) for k, want in expected.items()
                       if k in state_dict and tuple(state_dict[k].shape) != want)
    if missing or unexpected or misshaped:
        raise CheckpointMismatch(missing, unexpected, misshaped, context)
    if shapes_only:
        return jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, dtype), dict(targets))
    out = {}
    for path in flat_targets:
        rules, stacked = _layer_rules(plan[path])
        layers = [r.apply([to_numpy(state_dict[k]) for k in r.keys]).astype(dtype) for r in rules]
        out[path] = np.stack(layers) if stacked else layers[0]
    return unflatten(out)
