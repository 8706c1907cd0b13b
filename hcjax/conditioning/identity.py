"""HunyuanCustom's identity enhancement: reference-image latents as extra video-side tokens.

Each reference is one latent frame (the VAE posterior sample of the image padded to the video size), embedded
by the DiT's shared ``img_in`` and placed before the video tokens; the tokens are dropped before the final
layer. Their RoPE positions (reference section 6.1): the released code's ``timecat-w`` rule puts one subject at
time ``-1``, heights ``0 .. H'-1`` and widths shifted by the video's token width, ``W' .. 2W'-1``. For several
subjects the paper's rule puts subject ``k`` (1-based, in the order given) at time ``-k`` with the same spatial
positions; the tokens are laid out ``[subject 1; subject 2; ...; video]``. One subject is exactly the released
model. No params of its own: the official checkpoint has no identity keys.
"""

from __future__ import annotations

import dataclasses

import einops
import flax.linen as nn
import numpy as np

from hcjax.models.extensions import DiTContext, Extension


def reference_positions(grid: tuple[int, int, int], num_subjects: int) -> np.ndarray:
    """Integer RoPE positions ``[num_subjects * H' * W', 3]`` of the reference tokens of a video whose token
    grid is ``grid = (T', H', W')``: subject ``k = 1 .. n`` at ``(-k, h, W' + w)``."""
    _, h, w = grid
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    per_subject = [np.stack([np.full(h * w, -k), hh.reshape(-1), ww.reshape(-1) + w], axis=-1)
                   for k in range(1, num_subjects + 1)]
    return np.concatenate(per_subject, axis=0).astype(np.int32).reshape(-1, 3)


class _IdentityModule(nn.Module):
    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        ref = None if cond is None else cond.ref_latents
        if ref is None or ref.shape[1] == 0:
            return Extension()
        _, h, w = ctx.grid
        b, n = ref.shape[:2]
        tokens = ctx.patch_embed(einops.rearrange(ref, "b n h w c -> (b n) 1 h w c"))
        if tokens.shape[1] != h * w:
            raise ValueError(f"reference latents {tuple(ref.shape[2:4])} must have the video's latent height and "
                             f"width (a token grid of {h} x {w}): pad the reference image to the video size")
        tokens = einops.rearrange(tokens, "(b n) l d -> b (n l) d", b=b, n=n)
        return Extension(prefix_tokens=tokens, prefix_positions=reference_positions(ctx.grid, n))


@dataclasses.dataclass(frozen=True)
class Identity:
    """Reference-image tokens (config entry of ``DiTConfig.mechanisms``); reads ``cond.ref_latents``. Needs a
    temporal patch of 1 (one latent frame per reference)."""

    name: str = "identity"

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"identity references need patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _IdentityModule(name=name)
