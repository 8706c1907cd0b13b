"""The light encoder and decoder of a ``VAEConfig(blocks="conv")``: the causal VAE's interface, strides and time
rule (``4k + 1`` frames <-> ``k + 1`` latent frames) with one convolution per block.

Each encoder block is a causal convolution with the block's stride, GroupNorm and SiLU; each decoder block is a
convolution, GroupNorm and SiLU, then upsampling by the factor of the same index, as the official up blocks order
it. Time is mixed only inside a latent frame's own pixel frames: the encoder's temporal convolutions are its
stride-2 ones with 2 taps, every other kernel is ``(1, 3, 3)``, GroupNorm takes its statistics per frame (not
over the clip, as the official VAE does), and the decoder upsamples time by phases
(``PhaseUpsample``: a per-position projection gives each output frame of a latent frame its own features). So
latent frame ``k > 0`` is a function of pixel frames ``4k - 3 .. 4k`` alone (latent frame 0 of pixel frame 0), and
5-frame training crops train every latent frame of a 17-frame clip. With the official 3-tap temporal kernels the
receptive field spans several latent frames: trained on 5-frame crops, a 17-frame clip's later latent frames were
out of distribution and decoded to the subject's first position; with nearest upsampling in time the frames of one
latent frame get the same features, which a decoder this shallow cannot tell apart.
There is no mid block and no residual path (``layers_per_block`` and ``mid_block_causal_attn`` are unused). At the
sizes of the bundled demo model (8 to 32 channels, a few thousand CPU steps) the official residual structure learns
the scenes' luminance but not their colours; this one draws the colours within a few hundred single-frame steps
(the measurements are in the README's demo section).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from hcjax.configs import VAEConfig
from hcjax.models.vae_layers import dtype_kw, norm_act
from hcjax.nn.conv import CONV_AXES, CausalConv3d, upsample_nearest
from hcjax.nn.linear import Dense


FRAME_KERNEL = (1, 3, 3)   # space only


class ConvBlock(nn.Module):
    """Causal conv (``stride``; kernel ``(stride_t, 3, 3)``) -> GroupNorm of each frame -> SiLU; norm and activation
    in fp32."""

    cfg: VAEConfig
    features: int
    stride: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = (self.stride[0], *FRAME_KERNEL[1:])
        x = CausalConv3d(self.features, kernel, self.stride, name="conv", **dtype_kw(self.cfg))(x)
        frames = rearrange(x, "b t h w c -> (b t) 1 h w c")    # GroupNorm statistics per frame
        return rearrange(norm_act(self.cfg, "norm", frames), "(b t) 1 h w c -> b t h w c", b=x.shape[0])


class PhaseUpsample(nn.Module):
    """``[B, T, H, W, C]`` -> ``[B, 1 + ft (T - 1), fh H, fw W, C]`` for ``factor = (ft, fh, fw)``: a 1x1x1
    projection to ``ft * C`` features split into ``ft`` consecutive frames (frame 0, the causal VAE's lone first
    frame, keeps the last of its phases), then nearest upsampling in space."""

    cfg: VAEConfig
    factor: tuple[int, int, int]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        ft, fh, fw = self.factor
        if ft > 1:
            z = Dense(ft * z.shape[-1], CONV_AXES[-2:], kernel_init=nn.initializers.lecun_normal(), name="phases",
                      **dtype_kw(self.cfg))(z)
            z = rearrange(z, "b t h w (r c) -> b t r h w c", r=ft)
            z = jnp.concatenate([z[:, :1, -1], rearrange(z[:, 1:], "b t r h w c -> b (t r) h w c")], axis=1)
        return upsample_nearest(z, (1, fh, fw))


class ConvEncoder(nn.Module):
    """Pixels ``[B, 4k+1, H, W, 3]`` -> ``[B, k+1, H/s, W/s, 2 * latent_channels]`` (before ``quant_conv``)."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        for i, (features, stride) in enumerate(zip(cfg.block_channels, cfg.downsample_strides)):
            x = ConvBlock(cfg, features, stride or (1, 1, 1), name=f"blocks_{i}")(x)
        return CausalConv3d(2 * cfg.latent_channels, FRAME_KERNEL, name="conv_out", **dtype_kw(cfg))(x)


class ConvDecoder(nn.Module):
    """Latents ``[B, k+1, h, w, latent_channels]`` (after ``post_quant_conv``) -> pixels ``[B, 4k+1, s h, s w, 3]``."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.cfg
        for i, (features, factor) in enumerate(zip(reversed(cfg.block_channels), cfg.downsample_strides)):
            z = ConvBlock(cfg, features, name=f"blocks_{i}")(z)
            if factor is not None:
                z = PhaseUpsample(cfg, factor, name=f"up_{i}")(z)
        return CausalConv3d(cfg.in_channels, FRAME_KERNEL, name="conv_out", **dtype_kw(cfg))(z)
