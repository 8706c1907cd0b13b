"""Which params a run trains: name patterns over the params' ``/``-joined paths, optionally narrowed to a part
of a leaf.

``("*",)`` trains everything; ``("*audio*", "*identity*")`` only the adapters; HuMo's recipe trains the
self-attention of the DiT alone (``SELF_ATTENTION``). The frozen params get neither gradients nor optimizer
state: the step differentiates only the trainable subtree.

A pattern ending in ``@PART`` trains only that part of the leaves it matches (``PARTS``): a single block fuses
its attention with its MLP (``linear1 -> [q|k|v|mlp]``, ``linear2 <- [attn|GELU(mlp)]``), so
``single_blocks/linear1/*@qkv`` trains the first ``3 D`` output columns of ``linear1`` and
``single_blocks/linear2/*@attn_out`` the first ``D`` input rows of ``linear2`` (and its bias, shared by both
halves). A partially trainable leaf is whole in the trainable subtree (its optimizer moments too); the step
zeroes the gradient outside the part and keeps the old values there (``mask_grads`` / ``keep_frozen``), so the
frozen part stays bit-identical under weight decay and EMA.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import fnmatch
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

ALL = ("*",)
# HuMo's stage-1 recipe, "update only the self-attention layers": the attention projections and q/k norms of
# every block; of a single block's fused ``linear1`` / ``linear2`` only the attention's columns / rows.
SELF_ATTENTION = (
    "double_blocks/*_attn_*", "single_blocks/q_norm/*", "single_blocks/k_norm/*",
    "single_blocks/linear1/*@qkv", "single_blocks/linear2/*@attn_out",
)
# where the hidden size D can be read: the last axis of these leaves
_HIDDEN_SIZE_LEAVES = ("single_blocks/linear2/kernel", "img_in/proj/kernel")


@dataclasses.dataclass(frozen=True)
class Part:
    """The trained slice ``[start, stop)`` of a leaf along ``axis``; the rest of the leaf stays frozen."""

    axis: int
    start: int
    stop: int

    def mask(self, shape: Sequence[int]) -> jax.Array:
        """A boolean mask broadcastable to ``shape``: True inside the part."""
        axis = self.axis % len(shape)
        i = jnp.arange(shape[axis])
        inside = (i >= self.start) & (i < self.stop)
        return inside.reshape((-1,) + (1,) * (len(shape) - 1 - axis))


def _qkv(leaf: str, shape: Sequence[int], d: int) -> Part | None:
    """``linear1 [..., D, 3D + mlp] -> [q|k|v|mlp]``: the first ``3D`` output columns (kernel and bias)."""
    if leaf not in ("kernel", "bias"):
        raise ValueError(f"part 'qkv' applies to a kernel or bias, not {leaf!r}")
    return Part(-1, 0, 3 * d)


def _attn_out(leaf: str, shape: Sequence[int], d: int) -> Part | None:
    """``linear2 [..., D + mlp, D] <- [attn|mlp]``: the first ``D`` input rows; the bias is shared (whole)."""
    if leaf == "bias":
        return None
    if leaf != "kernel":
        raise ValueError(f"part 'attn_out' applies to a kernel or bias, not {leaf!r}")
    if len(shape) < 2 or shape[-1] != d:
        raise ValueError(f"part 'attn_out' needs a kernel [..., D + mlp, D = {d}], got shape {tuple(shape)}")
    return Part(-2, 0, d)


# part name -> (leaf name, leaf shape, hidden size) -> the trained Part, or None for the whole leaf
PARTS: dict[str, Callable[[str, Sequence[int], int], Part | None]] = {"qkv": _qkv, "attn_out": _attn_out}


@dataclasses.dataclass(frozen=True, eq=False)
class Trainable(collections.abc.Set):
    """The selected leaf paths (a set of ``/``-joined names: ``in``, ``len``, iteration and set operations
    work as on the old ``set[str]``) and, for the partially trainable ones, their ``Part``."""

    names: frozenset[str]
    parts: tuple[tuple[str, Part], ...] = ()

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trainable):
            return (self.names, self.parts) == (other.names, other.parts)
        return collections.abc.Set.__eq__(self, other)

    def __hash__(self) -> int:
        return hash((self.names, self.parts))

    @classmethod
    def _from_iterable(cls, it):   # set operations give plain frozensets of names
        return frozenset(it)

    def part(self, name: str) -> Part | None:
        """The trained part of leaf ``name``; None when it trains whole (or is not selected)."""
        return dict(self.parts).get(name)


def path_names(params: Any) -> list[str]:
    return ["/".join(k) for k in traverse_util.flatten_dict(params)]


def infer_hidden_size(params: Any) -> int:
    """The DiT's hidden size D, read from the param shapes."""
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    for name in _HIDDEN_SIZE_LEAVES:
        if name in flat:
            return int(flat[name].shape[-1])
    raise ValueError(f"cannot tell the hidden size: none of {_HIDDEN_SIZE_LEAVES} is a param; pass hidden_size")


def _parse(pattern: str) -> tuple[str, str | None]:
    glob, _, part = pattern.partition("@")
    if part and part not in PARTS:
        raise ValueError(f"trainable pattern {pattern!r}: unknown part {part!r}; known parts are {sorted(PARTS)}")
    return glob, part or None


def _leaf_part(name: str, shape: Sequence[int], part: str, d: int) -> Part | None:
    """The ``Part`` of leaf ``name`` for part ``part``; None if it covers the whole leaf."""
    try:
        p = PARTS[part](name.rsplit("/", 1)[-1], shape, d)
    except ValueError as e:
        raise ValueError(f"param {name}: {e}") from None
    if p is None:
        return None
    size = shape[p.axis]
    if not 0 <= p.start < p.stop <= size:
        raise ValueError(f"param {name} of shape {tuple(shape)}: part {part!r} is [{p.start}, {p.stop}) along "
                         f"axis {p.axis}, which has {size}")
    return None if (p.start, p.stop) == (0, size) else p


def select(params: Any, patterns: Sequence[str], hidden_size: int | None = None) -> Trainable:
    """The params matched by any of ``patterns`` (fnmatch, optionally ``@PART``); an error if a pattern matches
    nothing. A leaf matched whole by one pattern trains whole; two different parts of one leaf are an error.
    ``hidden_size`` (for the parts) defaults to the one the param shapes show."""
    flat = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()}
    parsed = [(p, *_parse(p)) for p in patterns]
    unused = [p for p, glob, _ in parsed if not fnmatch.filter(flat, glob)]
    if unused:
        raise ValueError(f"trainable patterns {unused} match no param; param paths look like "
                         f"{list(flat)[:3]} (fnmatch syntax, '*' crosses '/')")
    if hidden_size is None and any(part for _, _, part in parsed):
        hidden_size = infer_hidden_size(params)
    whole, parts = set(), {}
    for pattern, glob, part in parsed:
        for name in fnmatch.filter(flat, glob):
            p = None if part is None else _leaf_part(name, flat[name], part, hidden_size)
            if p is None:
                whole.add(name)
            elif parts.setdefault(name, p) != p:
                raise ValueError(f"param {name} gets two different parts ({parts[name]} and {p} from {pattern!r})")
    parts = {n: p for n, p in parts.items() if n not in whole}
    return Trainable(frozenset(whole | set(parts)), tuple(sorted(parts.items())))


def split(params: Any, trainable: collections.abc.Set) -> tuple[dict, dict]:
    """``(trainable subtree, frozen subtree)``: nested dicts holding only their own leaves (a partially
    trainable leaf goes whole into the trainable subtree)."""
    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if "/".join(k) in trainable}
    frozen = {k: v for k, v in flat.items() if "/".join(k) not in trainable}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge(train: dict, frozen: dict) -> dict:
    """The full params tree from its two parts."""
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(train))
    return traverse_util.unflatten_dict(flat)


def _parts_of(trainable: collections.abc.Set) -> dict[tuple[str, ...], Part]:
    parts = trainable.parts if isinstance(trainable, Trainable) else ()
    return {tuple(n.split("/")): p for n, p in parts}


def _outside_parts(tree: dict, trainable: collections.abc.Set, fill: Callable[[tuple, jax.Array], jax.Array]
                   ) -> dict:
    """``tree`` (shaped like the trainable subtree) with ``fill(path, leaf)`` 's values outside the trained
    parts of partially trainable leaves; ``tree`` itself when no leaf is partial."""
    parts = _parts_of(trainable)
    if not parts:
        return tree
    flat = traverse_util.flatten_dict(tree)
    for k, p in parts.items():
        if k in flat:
            flat[k] = jnp.where(p.mask(flat[k].shape), flat[k], fill(k, flat[k]))
    return traverse_util.unflatten_dict(flat)


def keep_frozen(new: dict, old: dict, trainable: collections.abc.Set) -> dict:
    """``new`` with ``old`` 's values (same tree structure) outside the trained parts."""
    flat_old = traverse_util.flatten_dict(old)
    return _outside_parts(new, trainable, lambda k, _: flat_old[k])


def mask_grads(grads: dict, trainable: collections.abc.Set) -> dict:
    """``grads`` zeroed outside the trained parts of partially trainable leaves."""
    return _outside_parts(grads, trainable, lambda _, g: jnp.zeros_like(g))
