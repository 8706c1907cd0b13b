"""HunyuanCustom's video-driven editing: the masked source video and its mask as additive token features.

``bg_latents [B, T, h, w, 2C]`` (masked-video latents ++ mask latents, each a VAE posterior sample, scaled) go
through ``bg_in`` (a patch embedding of ``2C`` channels, the strided Conv3d of ``img_in``'s shape) and
``bg_proj`` (Linear ``D -> D``), and are added to the video tokens right after ``img_in`` (before reference
tokens are prepended): ``img = img_in(x) + bg_proj(bg_in(bg))`` (reference section 6.3). Params and their
official keys: ``bg_in.proj.{weight,bias}``, ``bg_proj.{weight,bias}``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.embeddings import PatchEmbed
from hcjax.nn.linear import Dense


class _EditingModule(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        cfg = self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        bg_in = PatchEmbed(cfg.hidden_size, cfg.patch_size, name="bg_in", **kw)
        bg_proj = Dense(cfg.hidden_size, ("embed", "embed"), name="bg_proj", **kw)
        bg = None if cond is None else cond.bg_latents
        if bg is None:
            if self.is_initializing():
                bg_proj(bg_in(jnp.zeros((1, *cfg.patch_size, 2 * cfg.in_channels), jnp.float32)))
            return Extension()
        want = tuple(n * p for n, p in zip(ctx.grid, cfg.patch_size))
        if bg.ndim != 5 or tuple(bg.shape[1:4]) != want or bg.shape[-1] != 2 * cfg.in_channels:
            raise ValueError(f"bg_latents must be [B, {want[0]}, {want[1]}, {want[2]}, {2 * cfg.in_channels}] "
                             f"(the video's latent size, masked-video ++ mask latents), got {tuple(bg.shape)}")
        return Extension(token_add=bg_proj(bg_in(bg)))


@dataclasses.dataclass(frozen=True)
class Editing:
    """Masked-video conditioning (config entry of ``DiTConfig.mechanisms``); reads ``cond.bg_latents``."""

    name: str = "editing"

    def build(self, dit_cfg, name: str) -> nn.Module:
        return _EditingModule(dit_cfg, name=name)
