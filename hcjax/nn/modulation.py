"""adaLN modulation: ``Linear(SiLU(vec))`` split into shift / scale / gate vectors."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.nn.activations import silu
from hcjax.nn.linear import Dense


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


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x * (1 + scale) + shift`` broadcast over tokens (``x [B, L, D]``, ``shift, scale [B, D]``).

    As under autocast: ``1 + scale`` is formed in the modulation's dtype, the rest in fp32; returns fp32.
    """
    one_plus_scale = (1 + scale).astype(jnp.float32)[:, None]
    return x.astype(jnp.float32) * one_plus_scale + shift.astype(jnp.float32)[:, None]


def gate(x: jax.Array, g: jax.Array) -> jax.Array:
    """``x * g`` broadcast over tokens, in the compute dtype (no tanh)."""
    return x * g[:, None].astype(x.dtype)
