"""Guidance strategies as small pure functions.

* Embedded guidance (the CFG-distilled T2V / I2V models): the scale enters the model as an input,
  ``scale * 1000`` rounded to bfloat16 as the reference does (6.0 -> 6016.0).
* Classic CFG: ``v_u + g * (v_c - v_u)`` from a conditional and an unconditional branch.
* Multi-branch: any number of branches (text, image, audio, ... drop-outs), evaluated in one batched forward
  (or one after another to save memory) and combined by a function of the velocities and the timestep
  (HuMo's time-adaptive CFG and Avatar's schedules are such combines). The branches may depend on the timestep.
* Time-adaptive CFG (HuMo, reference B.4): three branches ``[e(T, I, A), e(T, I, 0), negative]`` with
  ``e = neg + s_t (e(T, I, 0) - neg) + s_a (e(T, I, A) - e(T, I, 0))``; while the integer timestep is above the
  switch (980: the first 5 of 50 steps at shift 5) ``neg = e(T-, I, 0)`` and ``s_t`` is the text scale, after it
  ``neg = e(T-, 0, 0)`` and ``s_t`` is the text scale - 2 (text and image guided jointly).
"""

from __future__ import annotations

import dataclasses
import math
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


Branches = Sequence[Any] | Callable[[jax.Array], Sequence[Any]]   # fixed, or a function of the timestep [B]


def multi_branch(model_fn: ModelFn, branches: Branches, combine: Combine,
                 batched: bool = True) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A ``velocity_fn(x, timestep)`` that runs ``model_fn`` on every branch's inputs (pytrees with a
    leading batch axis, all of the same structure and shapes) and combines the velocities. ``branches`` may be
    a function ``timestep -> branches`` (inputs that change over the schedule, selected inside the loop).

    ``batched``: one forward over the branches concatenated along the batch (the reference's CFG batch);
    otherwise one forward per branch (less memory at full size). Both give the same numbers per sample.
    """
    branches_at = branches if callable(branches) else (lambda t, fixed=list(branches): fixed)

    def velocity(x, timestep):
        bs = list(branches_at(timestep))
        n = len(bs)
        if n == 0:
            raise ValueError("multi_branch needs at least one branch")
        if n == 1 or not batched:
            return combine([model_fn(x, timestep, b) for b in bs], timestep)
        stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *bs)
        v = model_fn(jnp.concatenate([x] * n, axis=0), jnp.concatenate([timestep] * n, axis=0), stacked)
        return combine(jnp.split(v, n, axis=0), timestep)

    return velocity


def select_branch(pred: jax.Array, if_true: Any, if_false: Any) -> Any:
    """Per sample, the leaves of ``if_true`` where ``pred [B]`` holds, else those of ``if_false`` (same structure;
    leaves with a leading batch axis)."""
    def pick(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        return jnp.where(pred.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, if_true, if_false)


@dataclasses.dataclass(frozen=True)
class TimeAdaptiveCFG:
    """HuMo's time-adaptive CFG (module doc). ``switch=None``: no switch (HuMo's text + audio mode, where the
    negative has no image anyway): the early formula throughout. The switch tests the integer timestep
    ``floor(timestep) > switch``, as the reference's int64 timesteps do."""

    text_scale: float = 5.0
    audio_scale: float = 5.5
    switch: float | None = 980.0
    late_text_drop: float = 2.0

    def early(self, timestep: jax.Array) -> jax.Array:
        """``[B]`` bool: whether ``timestep`` is before the switch."""
        if self.switch is None:
            return jnp.ones(jnp.shape(timestep), bool)
        return jnp.floor(timestep) > self.switch

    def branches(self, full: Any, no_audio: Any, negative_early: Any, negative_late: Any) -> Callable:
        """``timestep -> [full, no_audio, negative]``: the branch inputs ``e(T, I, A)``, ``e(T, I, 0)`` and, before
        the switch ``negative_early`` (``e(T-, I, 0)``), after it ``negative_late`` (``e(T-, 0, 0)``)."""
        return lambda t: [full, no_audio, select_branch(self.early(t), negative_early, negative_late)]

    def combine(self, vs: Sequence[jax.Array], timestep: jax.Array) -> jax.Array:
        full, no_audio, negative = vs
        early = self.early(timestep).reshape((-1,) + (1,) * (full.ndim - 1))
        text = jnp.where(early, self.text_scale, self.text_scale - self.late_text_drop).astype(full.dtype)
        return negative + text * (no_audio - negative) + self.audio_scale * (full - no_audio)

    def early_steps(self, timesteps) -> int:
        """How many of the schedule's ``timesteps`` use the early formula."""
        if self.switch is None:
            return len(timesteps)
        return int(sum(math.floor(float(t)) > self.switch for t in timesteps))


def single(vs: Sequence[jax.Array], timestep: jax.Array) -> jax.Array:
    """Combine of a single branch (embedded guidance, or CFG off)."""
    (v,) = vs
    return v
