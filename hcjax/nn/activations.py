"""Activations evaluated in fp32 and returned in the input dtype, as PyTorch does for bf16 tensors."""

import jax
import jax.numpy as jnp


def silu(x: jax.Array) -> jax.Array:
    return jax.nn.silu(x.astype(jnp.float32)).astype(x.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(x.dtype)
