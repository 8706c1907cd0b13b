"""The light encoder and decoder of a ``VAEConfig(blocks="conv")``: the causal VAE's interface, strides and time
rule with one convolution per block.

Each encoder block is a causal 3D convolution with the block's stride, GroupNorm and SiLU; each decoder block is
convolution, GroupNorm and SiLU, then nearest upsampling (frame 0 in space only) by the factor of the same index,
as the official up blocks order it.
There is no mid block and no residual path (``layers_per_block`` and ``mid_block_causal_attn`` are unused). At the
sizes of the bundled demo model (8 to 32 channels, a few thousand CPU steps) the official residual structure learns
the scenes' luminance but not their colours; on single frames this one draws the colours within a few hundred
steps (the measurements are in the README's demo section).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from hcjax.configs import VAEConfig
from hcjax.models.vae_layers import dtype_kw, norm_act
from hcjax.nn.conv import CausalConv3d, upsample_nearest


class ConvBlock(nn.Module):
    """Causal conv (kernel 3, ``stride``) -> GroupNorm -> SiLU; norm and activation in fp32."""

    cfg: VAEConfig
    features: int
    stride: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = CausalConv3d(self.features, 3, self.stride, name="conv", **dtype_kw(self.cfg))(x)
        return norm_act(self.cfg, "norm", x)


class ConvEncoder(nn.Module):
    """Pixels ``[B, 4k+1, H, W, 3]`` -> ``[B, k+1, H/s, W/s, 2 * latent_channels]`` (before ``quant_conv``)."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        for i, (features, stride) in enumerate(zip(cfg.block_channels, cfg.downsample_strides)):
            x = ConvBlock(cfg, features, stride or (1, 1, 1), name=f"blocks_{i}")(x)
        return CausalConv3d(2 * cfg.latent_channels, 3, name="conv_out", **dtype_kw(cfg))(x)


class ConvDecoder(nn.Module):
    """Latents ``[B, k+1, h, w, latent_channels]`` (after ``post_quant_conv``) -> pixels ``[B, 4k+1, s h, s w, 3]``."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.cfg
        for i, (features, factor) in enumerate(zip(reversed(cfg.block_channels), cfg.downsample_strides)):
            z = ConvBlock(cfg, features, name=f"blocks_{i}")(z)
            if factor is not None:
                z = upsample_nearest(z, factor)
        return CausalConv3d(cfg.in_channels, 3, name="conv_out", **dtype_kw(cfg))(z)
