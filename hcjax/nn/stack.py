"""A stack of identical blocks with params stacked on a leading ``layers`` axis, run by ``lax.scan``.

The stacked layout keeps one traced block regardless of depth (fast compiles at 13B), and the stack can be
run in contiguous ranges of layers, so that conditioning hooks can act between chosen blocks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

REMAT = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


def _add_layer_axis(tree):
    """Prepends the logical axis name ``layers`` to every boxed param of a vmapped init."""
    return jax.tree.map(
        lambda box: box.add_axis(0, {nn.PARTITION_NAME: "layers"}) if isinstance(box, nn.Partitioned) else box,
        tree,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )


class BlockStack(nn.Module):
    """``depth`` blocks of type ``block_type(cfg)``; each block maps ``(carry, *args) -> carry``.

    Params are the block's own tree with a leading axis of size ``depth``. ``__call__(..., start, stop)``
    runs layers ``[start, stop)`` only; calling it for consecutive ranges equals one full call.
    """

    block_type: type
    cfg: Any
    depth: int
    scan: bool = True
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, carry, *args, start: int = 0, stop: int | None = None):
        stop = self.depth if stop is None else stop
        if not 0 <= start <= stop <= self.depth:
            raise ValueError(f"layer range [{start}, {stop}) outside a stack of depth {self.depth}")
        block = self.block_type(self.cfg, parent=None)
        if self.is_initializing() and not self.variables.get("params"):
            self._init_params(block, carry, args)
        params = nn.meta.unbox(self.variables["params"])

        def body(c, i):
            layer_params = jax.tree.map(lambda p: jax.lax.dynamic_index_in_dim(p, i, keepdims=False), params)
            return block.apply({"params": layer_params}, c, *args), None

        policy = REMAT[self.remat_policy]
        if policy is not None:
            body = jax.checkpoint(body, policy=policy, prevent_cse=not self.scan)
        if self.scan:  # indices, not sliced params, are scanned: a range of layers copies no weights
            carry, _ = jax.lax.scan(body, carry, jnp.arange(start, stop))
        else:
            for i in range(start, stop):
                carry, _ = body(carry, i)
        return carry

    def _init_params(self, block: nn.Module, carry, args) -> None:
        keys = jax.random.split(self.make_rng("params"), self.depth)
        stacked = jax.vmap(lambda key: block.init(key, carry, *args)["params"])(keys)
        stacked = _add_layer_axis(stacked)
        for name, subtree in stacked.items():
            self.param(name, lambda _key, s=subtree: s)
