"""Guidance strategies as small pure functions.

* Embedded guidance (the CFG-distilled T2V / I2V models): the scale enters the model as an input,
  ``scale * 1000`` rounded to bfloat16 as the reference does (6.0 -> 6016.0).
* Classic CFG: ``v_u + g * (v_c - v_u)`` from a conditional and an unconditional branch.
* Multi-branch: any number of branches (text, image, audio, ... drop-outs), evaluated in one batched forward
  (or one after another to save memory) and combined by a function of the velocities and the timestep
  (HuMo's time-adaptive CFG and Avatar's schedules are such combines).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]          # (x, timestep, branch inputs) -> v
Combine = Callable[[Sequence[jax.Array], jax.Array], jax.Array]      # (velocities, timestep) -> v


def embedded_guidance(scale: float, batch: int, round_to: Any = ml_dtypes.bfloat16) -> np.ndarray:
    """The guidance input ``[batch]`` of a distilled model: ``float32(scale) * 1000`` rounded to
    ``round_to`` (the reference casts it to the bf16 model dtype; pass ``None`` to keep float32)."""
    value = np.float32(scale) * np.float32(1000.0)
    if round_to is not None:
        value = value.astype(round_to).astype(np.float32)
    return np.full((batch,), value, np.float32)


def classic_cfg(scale: float, rescale: float = 0.0) -> Combine:
    """Combine for branches ``[cond, uncond]``: ``v_u + scale * (v_c - v_u)``, optionally re-scaled towards
    the conditional branch's per-sample std (``guidance_rescale``; 0 in every official setting)."""

    def combine(vs, timestep):
        v_cond, v_uncond = vs
        v = v_uncond + scale * (v_cond - v_uncond)
        if rescale:
            axes = tuple(range(1, v.ndim))
            std_c = jnp.std(v_cond.astype(jnp.float32), axis=axes, keepdims=True)
            std_v = jnp.std(v.astype(jnp.float32), axis=axes, keepdims=True)
            v = (rescale * v * (std_c / std_v) + (1 - rescale) * v).astype(v_cond.dtype)
        return v

    return combine


def multi_branch(model_fn: ModelFn, branches: Sequence[Any], combine: Combine,
                 batched: bool = True) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A ``velocity_fn(x, timestep)`` that runs ``model_fn`` on every branch's inputs (pytrees with a
    leading batch axis, all of the same structure and shapes) and combines the velocities.

    ``batched``: one forward over the branches concatenated along the batch (the reference's CFG batch);
    otherwise one forward per branch (less memory at full size). Both give the same numbers per sample.
    """
    branches = list(branches)
    n = len(branches)
    if n == 0:
        raise ValueError("multi_branch needs at least one branch")
    if n == 1:
        return lambda x, t: combine([model_fn(x, t, branches[0])], t)

    def velocity(x, timestep):
        if not batched:
            return combine([model_fn(x, timestep, b) for b in branches], timestep)
        stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *branches)
        v = model_fn(jnp.concatenate([x] * n, axis=0), jnp.concatenate([timestep] * n, axis=0), stacked)
        return combine(jnp.split(v, n, axis=0), timestep)

    return velocity


def single(vs: Sequence[jax.Array], timestep: jax.Array) -> jax.Array:
    """Combine of a single branch (embedded guidance, or CFG off)."""
    (v,) = vs
    return v
