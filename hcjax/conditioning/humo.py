"""HuMo's minimal-invasive image injection (reference B.2, B.8): reference latents appended after the video.

Each reference image is one clean latent frame. The frames go through the DiT's shared ``img_in`` (no new
params) and join the video tokens as extra image-side tokens at the *next* temporal positions with ordinary
spatial ones: reference ``k`` of a video of ``T'`` latent frames sits at RoPE ``(T' + k, h, w)``. They share the
video's timestep and modulation, as HuMo-1.7B's clean frames in the noisy latent do, and are dropped before the
final layer (HuMo discards the reference slots' outputs). The tokens are laid out before the video tokens
(``Extension.prefix_tokens``); attention sees positions, not order, so this is HuMo's temporal concatenation.
Compare Custom's references at time ``-k`` with a width shift and Avatar's frame at time ``-1``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import einops
import flax.linen as nn
import numpy as np

from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.rope import grid_positions


def appended_positions(grid: tuple[int, int, int], num_ref: int) -> np.ndarray:
    """RoPE positions ``[num_ref * H' * W', 3]`` of ``num_ref`` frames after a video of token grid ``grid``:
    ``(T' + k, h, w)``, frame-major."""
    t, h, w = grid
    return grid_positions(num_ref, h, w, offset=(t, 0, 0))


def num_references(cond) -> int:
    """How many reference frames ``cond`` appends (0 without ``ref_latents``)."""
    ref = None if cond is None else getattr(cond, "ref_latents", None)
    return 0 if ref is None else int(ref.shape[1])


class _ReferenceModule(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        n = num_references(cond)
        if n == 0:
            return Extension()
        ref, (_, h, w), c = cond.ref_latents, ctx.grid, self.cfg.in_channels
        ph, pw = self.cfg.patch_size[1:]
        if ref.ndim != 5 or tuple(ref.shape[2:]) != (h * ph, w * pw, c):
            raise ValueError(f"ref_latents must be [B, n_ref, {h * ph}, {w * pw}, {c}] (one latent frame per "
                             "reference image at the video's latent size: fit the image into a white canvas of "
                             f"the video size first), got {tuple(ref.shape)}")
        tokens = ctx.patch_embed(einops.rearrange(ref, "b n h w c -> (b n) 1 h w c"))
        tokens = einops.rearrange(tokens, "(b n) l d -> b (n l) d", n=n)
        return Extension(prefix_tokens=tokens, prefix_positions=appended_positions(ctx.grid, n))


@dataclasses.dataclass(frozen=True)
class HumoReference:
    """HuMo's appended reference frames (config entry of ``DiTConfig.mechanisms``); reads ``cond.ref_latents``.
    No params of its own. Must be the last mechanism that adds prefix tokens, so that the reference frames sit
    right before the video tokens (``HumoAudio`` reads them there)."""

    name: str = "reference"
    addable: ClassVar[bool] = True    # no params: any backbone directory seeds it

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"HuMo's reference frames need patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _ReferenceModule(dit_cfg, name=name)
