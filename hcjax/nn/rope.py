"""3D rotary position embedding from explicit per-token positions (interleaved-pair rotation).

Positions are data: a token at integer position ``(t, h, w)`` gets, per axis with ``d`` dims, angles
``pos * theta^(-2i/d)``; axes are concatenated in the order t | h | w. Rotation acts on pairs
``(x[2i], x[2i+1])`` in fp32. Tokens without a position (text) use the identity rotation.
"""

import jax
import jax.numpy as jnp
import numpy as np


def grid_positions(t: int, h: int, w: int, offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Integer positions ``[t*h*w, 3]`` of a (t, h, w) grid in row-major token order, shifted by ``offset``."""
    grid = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), axis=-1)
    return (grid.reshape(-1, 3) + np.asarray(offset)).astype(np.int32)


def inverse_frequencies(axes_dims: tuple[int, ...], theta: float) -> np.ndarray:
    """``theta^(-2i/d)`` for every axis, concatenated: ``[sum(d)/2]``, correctly rounded to fp32."""
    parts = [1.0 / float(theta) ** (np.arange(0, d, 2, dtype=np.float64) / d) for d in axes_dims]
    return np.concatenate(parts).astype(np.float32)


def rope_angles(positions: jax.Array, axes_dims: tuple[int, ...], theta: float) -> jax.Array:
    """Angles ``[..., L, head_dim/2]`` (fp32) for positions ``[..., L, n_axes]``."""
    inv = inverse_frequencies(axes_dims, theta)
    axis_of_pair = np.repeat(np.arange(len(axes_dims)), [d // 2 for d in axes_dims])
    # The barrier keeps XLA from constant-folding the tables of a static grid: folding cos / sin of a
    # 100k-token video in the compiler's evaluator takes minutes; computed at run time they cost microseconds.
    positions = jax.lax.optimization_barrier(jnp.asarray(positions))
    pos = positions.astype(jnp.float32)[..., axis_of_pair]  # [..., L, head_dim/2]
    return pos * jnp.asarray(inv)


def rope_tables(positions: jax.Array, axes_dims: tuple[int, ...], theta: float,
                num_unrotated: int = 0) -> tuple[jax.Array, jax.Array]:
    """``(cos, sin)``, each ``[..., L + num_unrotated, head_dim/2]`` fp32; the trailing ``num_unrotated``
    tokens (text) get cos = 1, sin = 0, which leaves them bit-identical."""
    angles = rope_angles(positions, axes_dims, theta)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if num_unrotated:
        pad = [(0, 0)] * (angles.ndim - 2) + [(0, num_unrotated), (0, 0)]
        cos = jnp.pad(cos, pad, constant_values=1.0)
        sin = jnp.pad(sin, pad, constant_values=0.0)
    return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates pairs of head-major ``x [B, H, L, D]`` by tables ``[L, D/2]`` or ``[B, L, D/2]``; fp32 math,
    input dtype out."""
    if cos.ndim == 3:
        cos, sin = cos[:, None], sin[:, None]
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    even, odd = xf[..., 0], xf[..., 1]
    out = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
