"""adaLN modulation: ``Linear(SiLU(vec))`` split into shift / scale / gate vectors.

A block's modulation input is a ``ModulationVec``: one vector per sample, and optionally a second one that
replaces it for a contiguous range of tokens (image-to-video's clean first frame). Shift / scale / gate are
then ``[B, D]`` (same for every token) or ``[B, L, D]`` (per token); ``modulate`` and ``gate`` take both.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from hcjax.nn.activations import silu
from hcjax.nn.linear import Dense


@flax.struct.dataclass
class ModulationVec:
    """``vec [B, D]`` for all tokens, except tokens ``[start, stop)`` of the image stream, which use
    ``range_vec [B, D]`` when it is given."""

    vec: jax.Array
    range_vec: jax.Array | None = None
    start: int = flax.struct.field(pytree_node=False, default=0)
    stop: int = flax.struct.field(pytree_node=False, default=0)


class Modulation(nn.Module):
    """The reference's ModulateDiT: ``linear(SiLU(vec))`` with ``factor * D`` outputs, zero-initialised,
    returned as ``factor`` vectors ``[B, D]`` in the reference's chunk order."""

    factor: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    layer_name: str = "linear"

    @nn.compact
    def __call__(self, vec: jax.Array) -> list[jax.Array]:
        out = Dense(self.factor * vec.shape[-1], ("embed", "modulation"), self.dtype, self.param_dtype,
                    kernel_init=nn.initializers.zeros, name=self.layer_name)(silu(vec.astype(self.dtype)))
        return jnp.split(out, self.factor, axis=-1)

    def per_token(self, mv: ModulationVec, length: int, ranged: bool = True) -> list[jax.Array]:
        """The ``factor`` vectors for a stream of ``length`` tokens: ``[B, D]`` each, or ``[B, length, D]``
        where ``mv`` gives tokens ``[start, stop)`` their own vector (``ranged=False`` ignores it, for the
        text stream)."""
        base = self(mv.vec)
        if mv.range_vec is None or not ranged:
            return base
        alt = self(mv.range_vec)
        idx = jnp.arange(length)
        in_range = ((idx >= mv.start) & (idx < mv.stop))[None, :, None]
        return [jnp.where(in_range, a[:, None], b[:, None]) for a, b in zip(alt, base)]


def _over_tokens(p: jax.Array) -> jax.Array:
    return p[:, None] if p.ndim == 2 else p


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x * (1 + scale) + shift`` over tokens (``x [B, L, D]``, ``shift, scale [B, D]`` or ``[B, L, D]``).

    As under autocast: ``1 + scale`` is formed in the modulation's dtype, the rest in fp32; returns fp32.
    """
    one_plus_scale = _over_tokens(1 + scale).astype(jnp.float32)
    return x.astype(jnp.float32) * one_plus_scale + _over_tokens(shift).astype(jnp.float32)


def gate(x: jax.Array, g: jax.Array) -> jax.Array:
    """``x * g`` over tokens (``g [B, D]`` or ``[B, L, D]``), in the compute dtype (no tanh)."""
    return x * _over_tokens(g).astype(x.dtype)
