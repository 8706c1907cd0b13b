"""LayerNorm, RMSNorm and GroupNorm with fp32 statistics, matching the reference's autocast behaviour."""

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


def group_norm(x: jax.Array, groups: int, eps: float) -> jax.Array:
    """GroupNorm statistics over every axis but batch, within groups of the last (channel) axis; fp32 output.

    For a video ``[B, T, H, W, C]`` the statistics span the whole clip, as in the reference."""
    xf = x.astype(jnp.float32)
    shape = xf.shape
    grouped = xf.reshape(shape[0], -1, groups, shape[-1] // groups)
    mean = jnp.mean(grouped, axis=(1, 3), keepdims=True)
    centered = grouped - mean
    var = jnp.mean(jnp.square(centered), axis=(1, 3), keepdims=True)
    return (centered * jax.lax.rsqrt(var + eps)).reshape(shape)


class GroupNorm(nn.Module):
    """Affine GroupNorm over the channel axis (last) with fp32 statistics and fp32 output (autocast keeps
    ``group_norm`` in fp32)."""

    groups: int = 32
    eps: float = 1e-6
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "conv_out"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if c % self.groups:
            raise ValueError(f"GroupNorm: {c} channels are not divisible into {self.groups} groups")
        scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)), (c,), self.param_dtype)
        bias = self.param("bias", partitioned(nn.initializers.zeros, (self.axis_name,)), (c,), self.param_dtype)
        return group_norm(x, self.groups, self.eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)
