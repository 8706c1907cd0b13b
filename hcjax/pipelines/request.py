"""What to sample: sizes, schedule, guidance and seed, checked against a model before any work."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import Preset, VAETiling, resolve_dtype


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One sampling run. ``embedded_guidance`` feeds a distilled model's guidance input (None: the model
    has none); ``cfg_scale != 1`` switches classic CFG on (needs negative text). ``noise_dtype``: the initial
    noise is rounded to it (the reference draws it in the fp16 text dtype). ``i2v_stability``: image-to-video
    starts from ``0.999 * noise + 0.001 * image latent`` as the official ``--i2v-stability``."""

    frames: int
    height: int
    width: int
    steps: int = 50
    shift: float = 7.0
    seed: int = 0
    embedded_guidance: float | None = 6.0
    cfg_scale: float = 1.0
    noise_dtype: str = "float16"
    i2v_stability: bool = True
    vae_tiling: VAETiling | None = None

    @classmethod
    def defaults(cls, preset: Preset, **overrides) -> "SampleRequest":
        """The preset's official settings, with ``overrides`` (None values are ignored)."""
        s = preset.sampler
        base = dict(frames=s.frames, height=s.height, width=s.width, steps=s.steps, shift=s.shift,
                    embedded_guidance=s.embedded_guidance if preset.dit.guidance_embed else None,
                    cfg_scale=s.cfg_scale)
        base.update({k: v for k, v in overrides.items() if v is not None})
        req = cls(**base)
        if req.vae_tiling is None and (req.height > 256 or req.width > 256 or req.frames > 64):
            req = dataclasses.replace(req, vae_tiling=VAETiling())
        return req

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale != 1.0

    def problems(self, preset: Preset) -> list[str]:
        out = []
        if self.frames < 1 or (self.frames - 1) % preset.vae.temporal_ratio:
            out.append(f"frames {self.frames} is not 4k+1; use e.g. {4 * max((self.frames - 1) // 4, 0) + 1} "
                       f"or {4 * ((self.frames - 1) // 4 + 1) + 1}")
        unit = preset.vae.spatial_ratio * preset.dit.patch_size[1]
        for name, n in (("height", self.height), ("width", self.width)):
            if n < unit or n % unit:
                out.append(f"{name} {n} must be a positive multiple of {unit}; use {max(unit, round(n / unit) * unit)}")
        if self.steps < 1:
            out.append(f"steps must be at least 1, got {self.steps}")
        if not self.shift > 0:
            out.append(f"flow shift must be positive, got {self.shift}")
        if preset.dit.guidance_embed and self.embedded_guidance is None:
            out.append(f"{preset.name} embeds guidance: give an embedded guidance scale (official 6.0)")
        if not preset.dit.guidance_embed and self.embedded_guidance is not None:
            out.append(f"{preset.name} has no guidance embedding: drop the embedded guidance (use cfg_scale)")
        try:
            resolve_dtype(self.noise_dtype)
        except ValueError as e:
            out.append(str(e))
        if self.vae_tiling is not None:
            try:
                self.vae_tiling.check(preset.vae)
            except ValueError as e:
                out.append(str(e))
        return out

    def latent_shape(self, preset: Preset) -> tuple[int, int, int, int]:
        """``(T, h, w, C)`` of the latents of this video."""
        v = preset.vae
        return ((self.frames - 1) // v.temporal_ratio + 1, self.height // v.spatial_ratio,
                self.width // v.spatial_ratio, v.latent_channels)


def initial_noise(seed: int, batch: int, shape: tuple[int, ...], dtype="float16") -> jax.Array:
    """Standard normal latents ``[batch, *shape]``, one key per sample (``seed + i``, as the reference's
    per-sample generators), rounded to ``dtype``; returned as float32."""
    keys = [jax.random.key(seed + i) for i in range(batch)]
    noise = jnp.stack([jax.random.normal(k, shape, jnp.float32) for k in keys])
    return noise.astype(resolve_dtype(dtype)).astype(jnp.float32)


def stability_start(noise: jax.Array, image_latent: jax.Array) -> jax.Array:
    """``noise * 0.999 + image * (1 - 0.999)`` in float32, the image broadcast over time."""
    t = np.float32(0.999)
    return noise * t + image_latent.astype(jnp.float32) * (np.float32(1.0) - t)
