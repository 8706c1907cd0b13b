"""The complete training state and its shardings.

``TrainState`` holds everything a resumed run needs besides the data iterator: the step, the full params in
fp32 (the master copy; the step casts them to the compute dtype), the optimizer state of the trainable subtree,
the EMA of the trainable subtree (or None), and the run's base RNG key (raw ``uint32[2]``; the key of step ``i``
is ``fold_in(rng, i)``, so a resumed run draws the same noise).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from hcjax.parallel.rules import LOGICAL_RULES
from hcjax.parallel.shardings import tree_shardings
from hcjax.training import trainable as trainable_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any
    rng: jax.Array


def create(params: Any, tx: optax.GradientTransformation, trainable: set[str], seed: int,
           ema: bool = False) -> TrainState:
    """A fresh state at step 0 (jit it with ``out_shardings`` to build it sharded)."""
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    train, _ = trainable_lib.split(params, trainable)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(train),
                      ema=jax.tree.map(jnp.copy, train) if ema else None,
                      rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32))


def final_params(state: TrainState, trainable: set[str]) -> Any:
    """The params a run exports: the EMA of the trainable subtree merged with the frozen rest where the run keeps
    an EMA (``optim.ema_decay > 0``), else the params themselves."""
    if state.ema is None:
        return state.params
    _, frozen = trainable_lib.split(state.params, trainable)
    return trainable_lib.merge(state.ema, frozen)


def abstract(abstract_params: Any, tx: optax.GradientTransformation, trainable: set[str], ema: bool = False
             ) -> TrainState:
    """The state's shapes and dtypes, no memory used."""
    return jax.eval_shape(lambda p: create(p, tx, trainable, 0, ema), abstract_params)


def shardings(state: TrainState, logical: Any, mesh, tx: optax.GradientTransformation, trainable: set[str],
              rules=LOGICAL_RULES) -> TrainState:
    """``NamedSharding`` of every leaf of an (abstract) state: params from their logical axis names
    (``hcjax.models.logical_axes``), optimizer moments and EMA like the params they follow, the rest
    replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    params = tree_shardings(state.params, logical, mesh, rules)
    train, _ = trainable_lib.split(params, trainable)
    opt_state = optax.tree_map_params(tx, lambda _, s: s, state.opt_state, train,
                                      transform_non_params=lambda _: replicated,
                                      is_leaf=lambda x: isinstance(x, NamedSharding))
    return TrainState(step=replicated, params=params, opt_state=opt_state,
                      ema=None if state.ema is None else train, rng=replicated)

