"""Which params a run trains: name patterns over the params' ``/``-joined paths.

``("*",)`` trains everything; ``("*audio*", "*identity*")`` only the adapters; HuMo's recipe trains the
self-attention of the DiT alone (``SELF_ATTENTION``). The frozen params get neither gradients nor optimizer
state: the step differentiates only the trainable subtree.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

from flax import traverse_util

ALL = ("*",)
# HuMo's stage-1 recipe, "update only the self-attention layers": the attention projections and q/k norms of
# every block. A single block's q, k, v and output projections are fused with its MLP (``linear1`` /
# ``linear2``), so on this backbone those whole layers train.
SELF_ATTENTION = (
    "double_blocks/*_attn_*", "single_blocks/linear1/*", "single_blocks/linear2/*", "single_blocks/q_norm/*",
    "single_blocks/k_norm/*",
)


def path_names(params: Any) -> list[str]:
    return ["/".join(k) for k in traverse_util.flatten_dict(params)]


def select(params: Any, patterns: Sequence[str]) -> set[str]:
    """Paths of the params matched by any of ``patterns`` (fnmatch); an error if a pattern matches nothing or
    nothing is selected."""
    names = path_names(params)
    unused = [p for p in patterns if not fnmatch.filter(names, p)]
    if unused:
        raise ValueError(f"trainable patterns {unused} match no param; param paths look like "
                         f"{names[:3]} (fnmatch syntax, '*' crosses '/')")
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def split(params: Any, trainable: set[str]) -> tuple[dict, dict]:
    """``(trainable subtree, frozen subtree)``: nested dicts holding only their own leaves."""
    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if "/".join(k) in trainable}
    frozen = {k: v for k, v in flat.items() if "/".join(k) not in trainable}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge(train: dict, frozen: dict) -> dict:
    """The full params tree from its two parts."""
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(train))
    return traverse_util.unflatten_dict(flat)
