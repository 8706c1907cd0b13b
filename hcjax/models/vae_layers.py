"""Layer helpers shared by the causal VAE's two block structures (``vae.py``: the official resnets; ``vae_conv.py``:
one conv per block): dtype keywords and GroupNorm -> SiLU in fp32, as the reference's autocast runs them."""

from __future__ import annotations

import jax

from hcjax.configs import VAEConfig, resolve_dtype
from hcjax.nn.norms import GroupNorm

GN_EPS = 1e-6


def dtype_kw(cfg: VAEConfig) -> dict:
    """``dtype`` (compute) and ``param_dtype`` keywords of the VAE's layers."""
    return dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))


def norm_act(cfg: VAEConfig, name: str, x: jax.Array) -> jax.Array:
    """GroupNorm then SiLU, both in fp32, cast to the compute dtype for the next convolution."""
    y = GroupNorm(cfg.norm_groups, GN_EPS, resolve_dtype(cfg.param_dtype), name=name)(x)
    return jax.nn.silu(y).astype(resolve_dtype(cfg.dtype))
