"""LayerNorm and RMSNorm with fp32 statistics, matching the reference's autocast behaviour."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.nn.linear import partitioned


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Normalises the last axis in fp32 (two-pass variance, like torch) and returns fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
    return centered * jax.lax.rsqrt(var + eps)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis; fp32 output (autocast's layer_norm returns fp32).

    ``affine=False`` has no params, as the DiT's norms; ``affine=True`` has ``scale`` and ``bias``.
    """

    eps: float = 1e-6
    affine: bool = False
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x, self.eps)
        if self.affine:
            d = x.shape[-1]
            scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)), (d,), self.param_dtype)
            bias = self.param("bias", partitioned(nn.initializers.zeros, (self.axis_name,)), (d,), self.param_dtype)
            y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y


class RMSNorm(nn.Module):
    """RMSNorm over the last axis: statistics in fp32, cast back to the input dtype, then times ``scale``."""

    eps: float = 1e-6
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "head_dim"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)), (d,), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * scale.astype(x.dtype)
