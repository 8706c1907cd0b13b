"""HunyuanVideo's causal 3D VAE ("884-16c"), channels-last: ``[B, T, H, W, C]``.

Param names mirror the reference keys (``encoder.down_blocks.0.resnets.1.conv1.conv.weight`` is
``encoder/down_blocks_0/resnets_1/conv1/conv/kernel``). Numerics follow the reference's autocast: GroupNorm and
SiLU in fp32, convolutions and the residual stream in the compute dtype, attention softmax in fp32.
Time is causal: latent frame 0 sees pixel frame 0 only, latent frame k >= 1 pixel frames 4k-3 .. 4k.
"""

from __future__ import annotations

import functools

import einops
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from hcjax.configs import VAEConfig, VAETiling
from hcjax.models import vae_tiling
from hcjax.models.vae_conv import ConvDecoder, ConvEncoder
from hcjax.models.vae_layers import GN_EPS, dtype_kw, norm_act
from hcjax.nn.attention import attention_head_major
from hcjax.nn.conv import CausalConv3d, Conv3d, upsample_nearest
from hcjax.nn.linear import Dense
from hcjax.nn.norms import GroupNorm

LOGVAR_RANGE = (-30.0, 20.0)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, plus the input (through a kernel-1 conv if the width changes)."""

    cfg: VAEConfig
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dtype_kw(self.cfg)
        h = CausalConv3d(self.features, 3, name="conv1", **kw)(norm_act(self.cfg, "norm1", x))
        h = CausalConv3d(self.features, 3, name="conv2", **kw)(norm_act(self.cfg, "norm2", h))
        if x.shape[-1] != self.features:
            x = CausalConv3d(self.features, 1, name="conv_shortcut", **kw)(x)
        return x.astype(kw["dtype"]) + h


class MidAttention(nn.Module):
    """Single-head self-attention over all tokens of the clip, frame-causal when ``cfg.mid_block_causal_attn``
    (a token of frame i sees frames <= i); GroupNorm on the input, residual added."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dtype_kw(self.cfg)
        _, _, h, w, c = x.shape
        normed = GroupNorm(self.cfg.norm_groups, GN_EPS, kw["param_dtype"], name="group_norm")(x)
        tokens = einops.rearrange(normed.astype(kw["dtype"]), "b t h w c -> b (t h w) c")
        axes = ("conv_in", "conv_out")
        q, k, v = (einops.rearrange(Dense(c, axes, name=n, **kw)(tokens), "b l c -> b 1 l c")
                   for n in ("to_q", "to_k", "to_v"))
        causal = h * w if self.cfg.mid_block_causal_attn else None
        out = attention_head_major(q, k, v, causal_block=causal)
        out = Dense(c, axes, name="to_out_0", **kw)(einops.rearrange(out, "b 1 l c -> b l c"))
        return x + einops.rearrange(out, "b (t h w) c -> b t h w c", h=h, w=w)


class MidBlock(nn.Module):
    cfg: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(self.cfg, c, name="resnets_0")(x)
        x = MidAttention(self.cfg, name="attentions_0")(x)
        return ResnetBlock(self.cfg, c, name="resnets_1")(x)


class Downsample(nn.Module):
    cfg: VAEConfig
    stride: tuple[int, int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return CausalConv3d(x.shape[-1], 3, self.stride, name="conv", **dtype_kw(self.cfg))(x)


class Upsample(nn.Module):
    cfg: VAEConfig
    factor: tuple[int, int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return CausalConv3d(x.shape[-1], 3, name="conv", **dtype_kw(self.cfg))(upsample_nearest(x, self.factor))


class Encoder(nn.Module):
    """Pixels ``[B, 4k+1, H, W, 3]`` -> ``[B, k+1, H/8, W/8, 2 * latent_channels]`` (before ``quant_conv``)."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, kw = self.cfg, dtype_kw(self.cfg)
        h = CausalConv3d(cfg.block_channels[0], 3, name="conv_in", **kw)(x)
        for i, (features, stride) in enumerate(zip(cfg.block_channels, cfg.downsample_strides)):
            h = _DownBlock(cfg, features, stride, name=f"down_blocks_{i}")(h)
        h = MidBlock(cfg, name="mid_block")(h)
        return CausalConv3d(2 * cfg.latent_channels, 3, name="conv_out", **kw)(norm_act(cfg, "conv_norm_out", h))


class _DownBlock(nn.Module):
    cfg: VAEConfig
    features: int
    stride: tuple[int, int, int] | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.cfg.layers_per_block):
            x = ResnetBlock(self.cfg, self.features, name=f"resnets_{j}")(x)
        if self.stride is not None:
            x = Downsample(self.cfg, self.stride, name="downsamplers_0")(x)
        return x


class _UpBlock(nn.Module):
    cfg: VAEConfig
    features: int
    factor: tuple[int, int, int] | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.cfg.layers_per_block + 1):
            x = ResnetBlock(self.cfg, self.features, name=f"resnets_{j}")(x)
        if self.factor is not None:
            x = Upsample(self.cfg, self.factor, name="upsamplers_0")(x)
        return x


class Decoder(nn.Module):
    """Latents ``[B, k+1, h, w, latent_channels]`` (after ``post_quant_conv``) -> pixels ``[B, 4k+1, 8h, 8w, 3]``."""

    cfg: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg, kw = self.cfg, dtype_kw(self.cfg)
        h = CausalConv3d(cfg.block_channels[-1], 3, name="conv_in", **kw)(z)
        h = MidBlock(cfg, name="mid_block")(h)
        # Up block i upsamples by the factor encoder block i downsamples with (same index, not mirrored).
        blocks = zip(reversed(cfg.block_channels), cfg.downsample_strides)
        for i, (features, factor) in enumerate(blocks):
            h = _UpBlock(cfg, features, factor, name=f"up_blocks_{i}")(h)
        return CausalConv3d(cfg.in_channels, 3, name="conv_out", **kw)(norm_act(cfg, "conv_norm_out", h))


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior: ``mean`` and ``logvar`` (clamped to [-30, 20]), fp32, ``[B, T, h, w, C]``."""

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def mode(self) -> jax.Array:
        return self.mean

    def sample(self, rng: jax.Array) -> jax.Array:
        """``mean + std * eps``, eps ~ N(0, 1) from ``rng`` (what HunyuanCustom and Avatar encode with)."""
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, jnp.float32)


def check_video(video, cfg: VAEConfig, size_multiple: int | None = None) -> None:
    """Raises ``ValueError`` naming the fix unless ``video`` is ``[B, 4k+1, H, W, in_channels]`` with ``H, W``
    multiples of ``size_multiple`` (default the spatial ratio, 8; the DiT path needs 16: latents are patchified
    2x2) and (when its values are concrete) values in [-1, 1]."""
    s, r = size_multiple or cfg.spatial_ratio, cfg.temporal_ratio
    if video.ndim != 5 or video.shape[-1] != cfg.in_channels:
        raise ValueError(f"expected a video [B, F, H, W, {cfg.in_channels}] (channels last), got {video.shape}")
    _, f, h, w, _ = video.shape
    if f % r != 1:
        raise ValueError(f"frame count {f} is not {r}k+1; trim the clip to {(f - 1) // r * r + 1} frames "
                         f"(the causal VAE encodes frame 0 alone, then groups of {r})")
    if h % s or w % s:
        raise ValueError(f"height and width {h}x{w} must be multiples of {s}; resize or crop to "
                         f"{h // s * s}x{w // s * s}")
    try:
        lo, hi = float(jnp.min(video)), float(jnp.max(video))
    except jax.errors.ConcretizationTypeError:
        return  # traced: the values are not known yet
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"video values span [{lo:.3g}, {hi:.3g}]; the VAE expects [-1, 1] "
                         "(map uint8 pixels with x / 127.5 - 1)")


def check_latents(latents, cfg: VAEConfig) -> None:
    if latents.ndim != 5 or latents.shape[-1] != cfg.latent_channels:
        raise ValueError(f"expected latents [B, T, h, w, {cfg.latent_channels}] (channels last, unscaled), got "
                         f"{latents.shape}")


class CausalVAE(nn.Module):
    """``encode`` (posterior mean), ``encode_distribution`` (mean and log-variance, for sampling) and ``decode``.

    ``tiling`` (a ``VAETiling``, static) splits large inputs into overlapping tiles blended linearly, as the
    reference does at inference; ``None`` runs the whole clip at once. Latents are unscaled (the pipeline
    multiplies by ``cfg.scaling_factor``)."""

    cfg: VAEConfig

    def setup(self):
        kw = dtype_kw(self.cfg)
        light = self.cfg.blocks == "conv"
        self.encoder = (ConvEncoder if light else Encoder)(self.cfg)
        self.decoder = (ConvDecoder if light else Decoder)(self.cfg)
        self.quant_conv = Conv3d(2 * self.cfg.latent_channels, (1, 1, 1), **kw)
        self.post_quant_conv = Conv3d(self.cfg.latent_channels, (1, 1, 1), **kw)

    def __call__(self, video: jax.Array) -> jax.Array:
        """Encode then decode (the posterior mean), untiled; used to create the params."""
        return self.decode(self.encode(video))

    def moments(self, video: jax.Array) -> jax.Array:
        """Untiled encoder output ``[B, T, h, w, 2 * latent_channels]`` (mean | logvar)."""
        return self.quant_conv(self.encoder(video))

    def decode_untiled(self, latents: jax.Array) -> jax.Array:
        return self.decoder(self.post_quant_conv(latents))

    def encode_distribution(self, video: jax.Array, tiling: VAETiling | None = None) -> DiagonalGaussian:
        check_video(video, self.cfg)
        return DiagonalGaussian.from_moments(self._tiled("moments", video, tiling))

    def encode(self, video: jax.Array, tiling: VAETiling | None = None) -> jax.Array:
        """Posterior mean, fp32 ``[B, (F - 1) / 4 + 1, H / 8, W / 8, latent_channels]``."""
        return self.encode_distribution(video, tiling).mean

    def decode(self, latents: jax.Array, tiling: VAETiling | None = None) -> jax.Array:
        """Pixels in about [-1, 1], fp32 ``[B, 4 (T - 1) + 1, 8 h, 8 w, in_channels]``."""
        check_latents(latents, self.cfg)
        return self._tiled("decode_untiled", latents, tiling).astype(jnp.float32)

    def _tiled(self, method: str, x: jax.Array, tiling: VAETiling | None) -> jax.Array:
        if tiling is None or self.is_initializing():
            return getattr(self, method)(x)
        tiling.check(self.cfg)
        fn = functools.partial(CausalVAE(self.cfg, parent=None).apply, {"params": self.variables["params"]},
                               method=getattr(CausalVAE, method))
        run = vae_tiling.encode if method == "moments" else vae_tiling.decode
        return run(fn, x, tiling, self.cfg.spatial_ratio, self.cfg.temporal_ratio)


def example_video(cfg: VAEConfig, frames: int = 1) -> jax.Array:
    """The smallest valid video (zeros), for init and shape tracing."""
    s = cfg.spatial_ratio
    return jnp.zeros((1, frames, s, s, cfg.in_channels), jnp.float32)
