"""Model configurations and named presets.

Every config is a frozen dataclass whose defaults are the official full-size numbers; presets bundle a DiT
and a VAE config under one name (``configs.get("hunyuan-video-t2v")``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

DTypeLike = Any

REMAT_POLICIES = ("none", "full", "save_dots", "offload")
ATTENTION_IMPLS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")


def resolve_dtype(dtype: DTypeLike) -> jnp.dtype:
    """Accepts names like "bfloat16" or jnp dtypes."""
    try:
        return jnp.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"unknown dtype {dtype!r}; use a name like 'float32' or 'bfloat16'") from e


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """HunyuanVideo dual-stream / single-stream DiT. Defaults: the 13B T2V model (HYVideo-T/2-cfgdistill)."""

    in_channels: int = 16
    out_channels: int = 16
    hidden_size: int = 3072
    num_heads: int = 24
    depth_double: int = 20
    depth_single: int = 40
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_axes: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    text_dim: int = 4096
    pooled_dim: int = 768
    refiner_depth: int = 2
    guidance_embed: bool = True
    dtype: DTypeLike = "bfloat16"
    param_dtype: DTypeLike = "bfloat16"
    # Conditioning mechanisms (HunyuanCustom, Avatar, HuMo) this model carries; empty for plain T2V.
    mechanisms: tuple[Any, ...] = ()
    # Execution choices; they change neither params nor numbers.
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        elif sum(self.rope_axes) != self.head_dim:
            problems.append(f"rope_axes {self.rope_axes} must sum to the head dim {self.head_dim}")
        if any(d % 2 for d in self.rope_axes):
            problems.append(f"every rope axis dim must be even, got {self.rope_axes}")
        if len(self.patch_size) != 3:
            problems.append(f"patch_size must be (t, h, w), got {self.patch_size}")
        if self.remat_policy not in REMAT_POLICIES:
            problems.append(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            problems.append(f"attention_impl {self.attention_impl!r} not in {ATTENTION_IMPLS}")
        names = [m.name for m in self.mechanisms]
        if len(set(names)) != len(names):
            problems.append(f"mechanism names must be unique, got {names}")
        if problems:
            raise ValueError("invalid DiTConfig: " + "; ".join(problems))
        resolve_dtype(self.dtype), resolve_dtype(self.param_dtype)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """HunyuanVideo causal 3D VAE ("884-16c"). Defaults: the official VAE."""

    in_channels: int = 3
    latent_channels: int = 16
    block_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    temporal_ratio: int = 4
    spatial_ratio: int = 8
    norm_groups: int = 32
    scaling_factor: float = 0.476986
    mid_block_causal_attn: bool = True
    dtype: DTypeLike = "float16"
    param_dtype: DTypeLike = "float16"

    def replace(self, **changes) -> "VAEConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: its DiT and VAE configs and what it is for."""

    name: str
    dit: DiTConfig
    vae: VAEConfig
    description: str = ""


def _hunyuan_video_t2v() -> Preset:
    return Preset(
        "hunyuan-video-t2v",
        DiTConfig(),
        VAEConfig(),
        "HunyuanVideo 13B text-to-video (CFG-distilled, embedded guidance), official numbers",
    )


def _tiny() -> Preset:
    return Preset(
        "tiny",
        DiTConfig(
            hidden_size=64,
            num_heads=2,
            depth_double=2,
            depth_single=2,
            rope_axes=(8, 12, 12),
            text_dim=32,
            pooled_dim=16,
            dtype="float32",
            param_dtype="float32",
        ),
        VAEConfig(block_channels=(16, 32, 32, 32), layers_per_block=1, norm_groups=8,
                  dtype="float32", param_dtype="float32"),
        "a few-hundred-thousand-parameter model with the T2V structure, for tests and smoke runs",
    )


_PRESETS: dict[str, Callable[[], Preset]] = {
    "hunyuan-video-t2v": _hunyuan_video_t2v,
    "tiny": _tiny,
}


def names() -> list[str]:
    """Names of all presets."""
    return list(_PRESETS)


def get(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}")
    return _PRESETS[name]()
