"""The flow-matching Euler sampler as one compiled loop.

``x_{i+1} = x_i + v(x_i, sigma_i * 1000) * (sigma_{i+1} - sigma_i)`` in float32 (the reference's scheduler
step), ``lax.fori_loop`` over the steps: no Python or dispatch between steps. Progress reaches the host
through ``jax.debug.callback``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.sampling.schedules import NUM_TRAIN_TIMESTEPS

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def euler_step(x: jax.Array, v: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One step in float32: ``x + v * (sigma_next - sigma)`` (``dt`` is negative going to clean)."""
    return x.astype(jnp.float32) + v.astype(jnp.float32) * (sigma_next - sigma)


def _checked_sigmas(sigmas) -> jax.Array:
    if isinstance(sigmas, (np.ndarray, list, tuple)) and not np.all(np.diff(np.asarray(sigmas)) < 0):
        raise ValueError("sigmas must decrease (noise -> clean); build them with flow_sigmas")
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D schedule of at least 2 values, got shape {sigmas.shape}")
    return sigmas


def euler_sample(velocity_fn: VelocityFn, noise: jax.Array, sigmas, *,
                 constrain: Callable[[jax.Array], jax.Array] | None = None,
                 progress: Callable[[int], None] | None = None) -> jax.Array:
    """Integrates from ``noise`` (at ``sigmas[0]``) to ``sigmas[-1]``; returns float32 latents.

    ``velocity_fn(x, timestep [B]) -> v`` with ``timestep = sigma * 1000`` (float32, not rounded).
    ``constrain(x)`` runs on the start and after every step (image-to-video keeps its clean first frame
    this way). ``progress(i)`` is called on the host after step ``i`` (0-based) finishes.
    Jit the caller with the model params as arguments; under ``jit`` this is one ``while`` loop.
    """
    x, _ = euler_sample_with_state(lambda x, t, i, s: (velocity_fn(x, t), s), noise, sigmas, (),
                                   constrain=constrain, progress=progress)
    return x


def euler_sample_with_state(velocity_fn: Callable, noise: jax.Array, sigmas, state, *,
                            constrain: Callable[[jax.Array], jax.Array] | None = None,
                            progress: Callable[[int], None] | None = None):
    """``euler_sample`` whose model carries state across steps (a step cache):
    ``velocity_fn(x, timestep, i, state) -> (v, state)``. Returns ``(x, final state)``."""
    sigmas = _checked_sigmas(sigmas)
    constrain = constrain or (lambda x: x)
    batch = noise.shape[0]

    def body(i, carry):
        x, state = carry
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        timestep = jnp.full((batch,), sigma * NUM_TRAIN_TIMESTEPS, jnp.float32)
        v, state = velocity_fn(x, timestep, i, state)
        x = constrain(euler_step(x, v, sigma, sigma_next))
        if progress is not None:
            jax.debug.callback(progress, i)
        return x, state

    x = constrain(noise.astype(jnp.float32))
    return jax.lax.fori_loop(0, sigmas.shape[0] - 1, body, (x, state))
