"""Causal 3D convolution of the HunyuanVideo VAE, channels-last.

The input is padded by edge replication: ``k - 1`` frames in front of the clip (none behind, so a frame never
sees the future) and ``k // 2`` pixels on each side in height and width; then a plain strided convolution.
Kernel-1 convolutions are a matmul over channels. On CPU a 3D convolution runs as the sum over the kernel's
``kt`` time taps (one for a ``(1, k, k)`` kernel) of 2D convolutions of the frames (XLA's CPU backend has a fast
2D convolution but a slow 3D one: about 5x faster forward, 1.6x with the backward, for the VAE's full-resolution
layers).
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.nn.linear import partitioned

# torch.nn.Conv3d's default weight and bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2, 3),
                                                   out_axis=4)
CONV_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")


def _bias_init(fan_in: int):
    bound = fan_in ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv3d(nn.Module):
    """Unpadded 3D convolution on ``[B, T, H, W, C]``; kernel ``[kt, kh, kw, in, out]`` (the torch weight
    transposed). Inputs and kernel in ``dtype``, accumulation in fp32."""

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride: tuple[int, int, int] = (1, 1, 1)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        fan_in = x.shape[-1] * self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        kernel = self.param("kernel", partitioned(torch_conv_init, CONV_AXES), shape, self.param_dtype)
        bias = self.param("bias", partitioned(_bias_init(fan_in), CONV_AXES[-1:]), (self.features,),
                          self.param_dtype)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.kernel_size == (1, 1, 1) and self.stride == (1, 1, 1):
            y = jnp.matmul(x, kernel[0, 0, 0], preferred_element_type=jnp.float32)
        elif jax.default_backend() == "cpu":
            y = conv3d_as_2d(x, kernel, self.stride)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, self.stride, "VALID",
                                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                             preferred_element_type=jnp.float32)
        return (y + bias.astype(jnp.float32)).astype(self.dtype)


def conv3d_as_2d(x: jax.Array, kernel: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
    """The unpadded 3D convolution of ``x [B, T, H, W, C]`` with ``kernel [kt, kh, kw, C, D]`` as the sum over the
    time taps ``dt`` of 2D convolutions of the frames ``dt, dt + st, ...`` (fp32 accumulation)."""
    kt, st = kernel.shape[0], stride[0]
    frames = (x.shape[1] - kt) // st + 1
    b = x.shape[0]
    y = None
    for dt in range(kt):
        taps = einops.rearrange(x[:, dt:dt + (frames - 1) * st + 1:st], "b t h w c -> (b t) h w c")
        term = jax.lax.conv_general_dilated(taps, kernel[dt], stride[1:], "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            preferred_element_type=jnp.float32)
        y = term if y is None else y + term
    return einops.rearrange(y, "(b t) h w d -> b t h w d", b=b)


def causal_pad(x: jax.Array, kernel_size: tuple[int, int, int]) -> jax.Array:
    """Replicate-pads ``[B, T, H, W, C]``: ``kt - 1`` frames in front, ``kh // 2`` / ``kw // 2`` on both sides."""
    kt, kh, kw = kernel_size
    return jnp.pad(x, ((0, 0), (kt - 1, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="edge")


class CausalConv3d(nn.Module):
    """``causal_pad`` then ``Conv3d`` (kept as the child ``conv``, as in the reference's key names)."""

    features: int
    kernel_size: int | tuple[int, int, int] = 3    # an int: a cube
    stride: tuple[int, int, int] = (1, 1, 1)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (self.kernel_size,) * 3 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        conv = Conv3d(self.features, k, tuple(self.stride), self.dtype, self.param_dtype, name="conv")
        return conv(causal_pad(x, k))


def upsample_nearest(x: jax.Array, factor: tuple[int, int, int]) -> jax.Array:
    """Nearest-neighbour upsampling of ``[B, T, H, W, C]`` where frame 0 is enlarged in space only: ``T`` frames
    become ``1 + ft * (T - 1)``."""
    ft, fh, fw = factor
    x = jnp.repeat(jnp.repeat(x, fh, axis=2), fw, axis=3)
    return jnp.concatenate([x[:, :1], jnp.repeat(x[:, 1:], ft, axis=1)], axis=1)
