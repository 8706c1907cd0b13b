"""Image-to-video by token replacement (HunyuanVideo-I2V, ``i2v_condition_type="token_replace"``).

The pipeline puts the image latent in the first latent frame and never noises it; inside the DiT the tokens
of that frame are modulated as clean: their vector is ``time_in(0) + vector_in(pooled)`` (no guidance term)
in every double and single block, while the other tokens keep ``time_in(t) + vector_in(pooled) [+ guidance]``.
The final layer uses the common vector for all tokens. No params of its own: an official or diffusers I2V
checkpoint has the T2V key set.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from hcjax.models.extensions import DiTContext, Extension


class _TokenReplaceModule(nn.Module):
    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        _, h, w = ctx.grid
        clean_vec = ctx.embed_timestep(jnp.zeros_like(ctx.timestep)) + ctx.pooled_vec
        return Extension(lead_vec=clean_vec, lead_tokens=h * w)


@dataclasses.dataclass(frozen=True)
class TokenReplace:
    """The I2V DiT's clean-first-frame modulation (config entry of ``DiTConfig.mechanisms``). Needs a
    temporal patch of 1, so that the first token frame is the first latent frame."""

    name: str = "token_replace"

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"token replacement needs patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _TokenReplaceModule(name=name)
