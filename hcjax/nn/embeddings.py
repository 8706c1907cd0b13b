"""Embedders of the DiT: timestep sinusoids, two-layer MLPs, the strided-conv patch embedding."""

import math
from typing import Callable

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.nn.activations import silu
from hcjax.nn.linear import Dense, partitioned, torch_linear_init


def timestep_sinusoid(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """``[cos(t * f_i) | sin(t * f_i)]`` with ``f_i = exp(-ln(max_period) * i / (dim/2))``; fp32 ``[B, dim]``.

    The frequencies are the correctly rounded fp32 values (computed in fp64); the reference's fp32 ``exp``
    differs by at most an ulp depending on its platform, which at t ~ 6000 shifts phases by ~1e-4.
    """
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half).astype(np.float32)
    args = t.astype(jnp.float32)[:, None] * jnp.asarray(freqs)[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class MLP(nn.Module):
    """``Dense -> act -> Dense``, its two layers named ``names``, logical axes ``(in, hidden, out)``."""

    hidden: int
    out: int
    act: Callable[[jax.Array], jax.Array]
    names: tuple[str, str] = ("fc1", "fc2")
    axes: tuple[str, str, str] = ("embed", "mlp", "embed")
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = torch_linear_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
        h = Dense(self.hidden, self.axes[:2], name=self.names[0], **kw)(x)
        return Dense(self.out, self.axes[1:], name=self.names[1], **kw)(self.act(h))


def timestep_embedding(t: jax.Array, mlp: MLP, freq_dim: int = 256) -> jax.Array:
    """The reference's TimestepEmbedder: sinusoid of the raw timestep (0..1000 scale), cast to the compute
    dtype, through ``mlp`` (``mlp_0 -> SiLU -> mlp_2``)."""
    return mlp(timestep_sinusoid(t, freq_dim).astype(mlp.dtype))


def timestep_mlp(hidden: int, dtype, param_dtype, name: str | None = None) -> MLP:
    """The MLP of a TimestepEmbedder (``{name}.mlp.0`` / ``{name}.mlp.2`` in the reference)."""
    return MLP(hidden, hidden, silu, ("mlp_0", "mlp_2"), ("freq", "embed", "embed"), dtype, param_dtype,
               nn.initializers.normal(0.02), name=name)


class PatchConv(nn.Module):
    """Conv3d with kernel = stride = patch, as patchify + matmul. The kernel is stored in Flax conv layout
    ``[pt, ph, pw, C, D]``, so the patch vector order is (pt, ph, pw, c)."""

    features: int
    patch_size: tuple[int, int, int]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pt, ph, pw = self.patch_size
        c = x.shape[-1]
        names = ("patch_t", "patch_h", "patch_w", "latent_channels", "embed")
        init = nn.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=4)
        kernel = self.param("kernel", partitioned(init, names), (pt, ph, pw, c, self.features), self.param_dtype)
        bias = self.param("bias", partitioned(nn.initializers.zeros, ("embed",)), (self.features,),
                          self.param_dtype)
        patches = einops.rearrange(x, "b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
        kernel = kernel.reshape(-1, self.features).astype(self.dtype)
        return jnp.matmul(patches.astype(self.dtype), kernel) + bias.astype(self.dtype)


class PatchEmbed(PatchConv):
    """The reference's PatchEmbed: the strided Conv3d as a child named ``proj``, flattened to tokens in
    (t, h, w) row-major order: ``[B, T, H, W, C] -> [B, T'H'W', D]``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return PatchConv(self.features, self.patch_size, self.dtype, self.param_dtype, name="proj")(x)
