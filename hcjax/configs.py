"""Model configurations and named presets.

Every config is a frozen dataclass whose defaults are the official full-size numbers; presets bundle a DiT
and a VAE config under one name (``configs.get("hunyuan-video-t2v")``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax.numpy as jnp

DTypeLike = Any

REMAT_POLICIES = ("none", "full", "save_dots", "offload")
ATTENTION_IMPLS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")
SEQUENCE_PARALLEL_MODES = ("none", "ulysses", "ring")


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
    # Sequence parallelism of the joint attention over mesh axis ``sequence_axis`` (``hcjax.parallel.sequence``);
    # active only under a mesh (``jax.set_mesh``) where that axis has size > 1.
    sequence_parallel: str = "none"
    sequence_axis: str = "sequence"

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
        if self.sequence_parallel not in SEQUENCE_PARALLEL_MODES:
            problems.append(f"sequence_parallel {self.sequence_parallel!r} not in {SEQUENCE_PARALLEL_MODES}")
        if not self.sequence_axis:
            problems.append("sequence_axis must name a mesh axis")
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


VAE_BLOCKS = ("resnet", "conv")


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
    # "resnet": the official structure. "conv": one strided conv -> GroupNorm -> SiLU per block, no mid block
    # (layers_per_block unused) and time mixed only within a latent frame, for small VAEs trained from scratch on a
    # CPU on short clips (hcjax.models.vae_conv); it has no official checkpoint.
    blocks: str = "resnet"
    dtype: DTypeLike = "float16"
    param_dtype: DTypeLike = "float16"

    def __post_init__(self):
        problems = []
        if self.blocks not in VAE_BLOCKS:
            problems.append(f"blocks {self.blocks!r} is not one of {VAE_BLOCKS}")
        n = len(self.block_channels)
        if self.temporal_ratio != 4:
            problems.append(f"temporal_ratio {self.temporal_ratio} is not supported (the causal VAE compresses "
                            "time 4x)")
        spatial_layers = int(math.log2(self.spatial_ratio)) if self.spatial_ratio > 0 else -1
        if self.spatial_ratio < 1 or 2 ** spatial_layers != self.spatial_ratio or spatial_layers > n - 1:
            problems.append(f"spatial_ratio {self.spatial_ratio} must be a power of 2 up to 2**{n - 1} "
                            f"({n} blocks)")
        if n < 3:
            problems.append(f"block_channels {self.block_channels} needs at least 3 blocks for 4x time compression")
        odd = [c for c in self.block_channels if c % self.norm_groups]
        if odd:
            problems.append(f"block_channels {odd} are not divisible into norm_groups {self.norm_groups}")
        if self.layers_per_block < 1:
            problems.append(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        if problems:
            raise ValueError("invalid VAEConfig:\n  " + "\n  ".join(problems))

    @property
    def downsample_strides(self) -> tuple[tuple[int, int, int] | None, ...]:
        """Per encoder block (decoder blocks mirror it): the ``(t, h, w)`` down/upsampling factor, or None.
        Spatial halving in the first log2(spatial_ratio) blocks, temporal halving in the two blocks before
        the last one."""
        n, spatial_layers = len(self.block_channels), int(math.log2(self.spatial_ratio))
        strides = []
        for i in range(n):
            hw = 2 if i < spatial_layers else 1
            t = 2 if n - 3 <= i < n - 1 else 1
            strides.append(None if (t, hw) == (1, 1) else (t, hw, hw))
        return tuple(strides)

    def replace(self, **changes) -> "VAEConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class VAETiling:
    """Tiles of a VAE encode / decode, in pixels and pixel frames (the latent tiles follow from the VAE's
    ratios). Defaults: the official inference settings (256 px tiles every 192 px, 64-frame tiles every 48
    frames: overlap 0.25). ``spatial`` / ``temporal`` switch either kind off."""

    tile_size: int = 256
    tile_stride: int = 192
    tile_frames: int = 64
    tile_frame_stride: int = 48
    spatial: bool = True
    temporal: bool = True

    def check(self, vae: VAEConfig) -> None:
        problems = []
        s, r = vae.spatial_ratio, vae.temporal_ratio
        if not 0 < self.tile_stride <= self.tile_size:
            problems.append(f"need 0 < tile_stride <= tile_size, got {self.tile_stride}, {self.tile_size}")
        if self.tile_size % s or self.tile_stride % s:
            problems.append(f"tile_size {self.tile_size} and tile_stride {self.tile_stride} must be multiples "
                            f"of the spatial ratio {s}")
        if not 0 < self.tile_frame_stride <= self.tile_frames:
            problems.append(f"need 0 < tile_frame_stride <= tile_frames, got {self.tile_frame_stride}, "
                            f"{self.tile_frames}")
        if self.tile_frames % r or self.tile_frame_stride % r:
            problems.append(f"tile_frames {self.tile_frames} and tile_frame_stride {self.tile_frame_stride} "
                            f"must be multiples of the temporal ratio {r}")
        if problems:
            raise ValueError("invalid VAETiling:\n  " + "\n  ".join(problems))


@dataclasses.dataclass(frozen=True)
class SamplerDefaults:
    """The official sampling settings of a model (reference section 5); the CLI's defaults."""

    steps: int = 50
    shift: float = 7.0
    embedded_guidance: float | None = 6.0   # None: the model has no guidance embedding
    cfg_scale: float = 1.0                  # classic CFG (off at 1.0)
    frames: int = 129
    height: int = 720
    width: int = 1280
    fps: float = 24.0


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: its DiT and VAE configs, its sampling defaults and what it is for."""

    name: str
    dit: DiTConfig
    vae: VAEConfig
    description: str = ""
    sampler: SamplerDefaults = SamplerDefaults()
    # The Whisper encoder whose hidden states the model's audio adapter reads (None: no audio input).
    audio_encoder: Any = None
    # A model directory shipped inside the package (path relative to the ``hcjax`` package), used instead of
    # random weights; and a built-in text encoder ("demo": ``hcjax.demo.text``) instead of converted ones.
    bundled_weights: str | None = None
    text_encoder: str | None = None

    @property
    def image_to_video(self) -> bool:
        """Whether the model animates a first-frame image (token replacement)."""
        return any(m.name == "token_replace" for m in self.dit.mechanisms)

    def mechanism(self, name: str) -> Any:
        """The DiT's conditioning mechanism called ``name``, or None."""
        return next((m for m in self.dit.mechanisms if m.name == name), None)


def _hunyuan_video_t2v() -> Preset:
    return Preset(
        "hunyuan-video-t2v",
        DiTConfig(),
        VAEConfig(),
        "HunyuanVideo 13B text-to-video (CFG-distilled, embedded guidance), official numbers",
    )


def _hunyuan_video_i2v() -> Preset:
    from hcjax.conditioning.token_replace import TokenReplace

    return Preset(
        "hunyuan-video-i2v",
        DiTConfig(mechanisms=(TokenReplace(),)),
        VAEConfig(),
        "HunyuanVideo-I2V 13B (token replacement: clean image latent as the first frame, embedded guidance)",
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
        SamplerDefaults(steps=30, frames=9, height=64, width=96),
    )


def _tiny_i2v() -> Preset:
    from hcjax.conditioning.token_replace import TokenReplace

    tiny = _tiny()
    return dataclasses.replace(tiny, name="tiny-i2v", dit=tiny.dit.replace(mechanisms=(TokenReplace(),)),
                               description="the tiny model with the I2V structure (token replacement)")


def _tiny_whisper():
    """The Whisper encoder of the tiny audio presets: 16 wide, 4 layers (5 hidden states: HuMo's 5 groups work)."""
    from hcjax.models.audio.whisper import WhisperEncoderConfig

    return WhisperEncoderConfig(d_model=16, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=32)


CUSTOM_SAMPLER = SamplerDefaults(steps=30, shift=13.0, embedded_guidance=None, cfg_scale=7.5, fps=25.0)
CUSTOM_EDITING_SAMPLER = dataclasses.replace(CUSTOM_SAMPLER, steps=50, shift=5.0)


def _custom(kind: str, tiny: bool = False) -> Preset:
    """HunyuanCustom: ``kind`` "image" (ref2v), "audio" or "editing". Every variant has the identity
    references and no guidance embedding; audio adds the AudioNet, editing the masked-video input."""
    from hcjax.conditioning.audio import CustomAudio
    from hcjax.conditioning.editing import Editing
    from hcjax.conditioning.identity import Identity
    from hcjax.models.audio.whisper import WhisperEncoderConfig

    base = _tiny() if tiny else _hunyuan_video_t2v()
    whisper = _tiny_whisper() if tiny else WhisperEncoderConfig.tiny()
    audio = (CustomAudio(double_blocks=(0, 1), channels=whisper.d_model, hidden=32, head_dim=32) if tiny
             else CustomAudio())
    mechanisms = {"image": (Identity(),), "audio": (Identity(), audio), "editing": (Identity(), Editing())}[kind]
    sampler = CUSTOM_EDITING_SAMPLER if kind == "editing" else CUSTOM_SAMPLER
    if tiny:
        sampler = dataclasses.replace(sampler, frames=base.sampler.frames, height=base.sampler.height,
                                      width=base.sampler.width, steps=min(sampler.steps, base.sampler.steps))
    suffix = "" if kind == "image" else f"-{kind}"
    what = {"image": "subject references (image-driven, ref2v)", "audio": "references + audio (AudioNet)",
            "editing": "references + masked source video (video-driven editing)"}[kind]
    return Preset(
        f"tiny-custom{suffix}" if tiny else f"hunyuan-custom{suffix}",
        base.dit.replace(guidance_embed=False, mechanisms=mechanisms),
        base.vae,
        (f"the tiny model with the HunyuanCustom {kind} structure" if tiny
         else f"HunyuanCustom 13B: {what}; classic CFG 7.5, official numbers"),
        sampler,
        audio_encoder=whisper if kind == "audio" else None,
    )


AVATAR_SAMPLER = SamplerDefaults(steps=50, shift=5.0, embedded_guidance=None, cfg_scale=7.5, frames=129,
                                 height=704, width=704, fps=25.0)


def _avatar(tiny: bool = False, emotion: bool = False) -> Preset:
    """HunyuanVideo-Avatar: the character image (added frame for frame and prepended at time -1), the face-aware
    audio adapter after the odd double blocks, motion / fps modulation; no guidance embedding. ``emotion`` adds
    the Audio Emotion Module (``conditioning.emotion``), which no released checkpoint has."""
    from hcjax.conditioning.avatar import AvatarMotion, AvatarReference
    from hcjax.conditioning.avatar_audio import AvatarAudio
    from hcjax.conditioning.emotion import AvatarEmotion
    from hcjax.models.audio.whisper import WhisperEncoderConfig

    base = _tiny() if tiny else _hunyuan_video_t2v()
    whisper = _tiny_whisper() if tiny else WhisperEncoderConfig.tiny()
    audio = (AvatarAudio(name="face_audio", double_blocks=(0, 1), channels=whisper.d_model, hidden=32, head_dim=32)
             if tiny else AvatarAudio(name="face_audio"))
    sampler = (dataclasses.replace(AVATAR_SAMPLER, steps=20, frames=9, height=64, width=64) if tiny
               else AVATAR_SAMPLER)
    mechanisms = (AvatarReference(), audio, AvatarMotion())
    if emotion:
        mechanisms += (AvatarEmotion(double_blocks=(0, 1), hidden=32, head_dim=16) if tiny else AvatarEmotion(),)
    what = ("the tiny model with the HunyuanVideo-Avatar structure" if tiny
            else "HunyuanVideo-Avatar 13B: audio-driven character animation (face-aware audio adapter); official "
                 "sampler: shift 5, 50 steps, scheduled CFG")
    return Preset(
        ("tiny-avatar" if tiny else "hunyuan-avatar") + ("-emotion" if emotion else ""),
        base.dit.replace(guidance_embed=False, mechanisms=mechanisms),
        base.vae,
        what + ("; plus the Audio Emotion Module (ours, untrained: no released weights)" if emotion else ""),
        sampler,
        audio_encoder=whisper,
    )


HUMO_SAMPLER = SamplerDefaults(steps=50, shift=5.0, embedded_guidance=None, cfg_scale=5.0, frames=97,
                               height=720, width=1280, fps=25.0)


def _humo(tiny: bool = False) -> Preset:
    """HuMo's mechanisms on the HunyuanVideo backbone: reference latents appended after the video
    (``conditioning.humo``), audio cross-attention after every double block (``conditioning.humo_audio``, fed by
    whisper-large-v3 windows) and the focus-by-predicting mask head (``conditioning.mask_predictor``); no guidance
    embedding (time-adaptive CFG, ``sampling.TimeAdaptiveCFG``). No released checkpoint has this combination:
    convert the T2V backbone and train the rest (``experiments/configs/humo.py``)."""
    from hcjax.conditioning.humo import HumoReference
    from hcjax.conditioning.humo_audio import HumoAudio
    from hcjax.conditioning.mask_predictor import HumoMaskPredictor
    from hcjax.models.audio.whisper import WhisperEncoderConfig

    base = _tiny() if tiny else _hunyuan_video_t2v()
    if tiny:
        whisper = _tiny_whisper()
        mechanisms = (HumoReference(), HumoAudio(double_blocks=(0, 1), channels=whisper.d_model, hidden=32,
                                                 tokens=16, features=24, head_dim=32),
                      HumoMaskPredictor(taps=(1,), hidden=32))
        sampler = dataclasses.replace(HUMO_SAMPLER, steps=20, frames=9, height=64, width=64)
    else:
        whisper, sampler = WhisperEncoderConfig.large_v3(), HUMO_SAMPLER
        mechanisms = (HumoReference(), HumoAudio(), HumoMaskPredictor())
    return Preset(
        "tiny-humo" if tiny else "humo",
        base.dit.replace(guidance_embed=False, mechanisms=mechanisms),
        base.vae,
        "the tiny model with HuMo's mechanisms" if tiny else
        "HuMo's mechanisms on HunyuanVideo 13B: appended reference frames, audio cross-attention in every double "
        "block, face-mask predictor; time-adaptive CFG (text 5.0, audio 5.5, switch at t 980), shift 5, 50 steps",
        sampler,
        audio_encoder=whisper,
    )


DEMO_SAMPLER = SamplerDefaults(steps=25, shift=3.0, embedded_guidance=None, cfg_scale=4.0, frames=17, height=128,
                               width=128, fps=10.0)


def _demo() -> Preset:
    """The bundled demo model (``hcjax.demo``): HunyuanCustom's structure (identity reference at time -1, classic
    CFG) at 2.6M DiT params, an 8-channel causal VAE, the word-vector text encoder; trained by ``hcjax train`` on
    the procedural world (experiments/configs/demo.py)."""
    from hcjax.conditioning.identity import Identity

    return Preset(
        "demo",
        DiTConfig(in_channels=8, out_channels=8, hidden_size=128, num_heads=2, depth_double=2, depth_single=4,
                  rope_axes=(16, 24, 24), text_dim=64, pooled_dim=64, refiner_depth=1, guidance_embed=False,
                  mechanisms=(Identity(),), dtype="float32", param_dtype="bfloat16"),
        VAEConfig(latent_channels=8, block_channels=(16, 32, 32, 32), norm_groups=2, blocks="conv",
                  scaling_factor=1.09, dtype="float32", param_dtype="float32"),
        "the bundled demo model: shapes moving over backgrounds, from a caption and a reference image; trained by "
        "hcjax on procedural data",
        DEMO_SAMPLER,
        bundled_weights="demo/weights",
        text_encoder="demo",
    )


_PRESETS: dict[str, Callable[[], Preset]] = {
    "hunyuan-video-t2v": _hunyuan_video_t2v,
    "hunyuan-video-i2v": _hunyuan_video_i2v,
    "hunyuan-custom": lambda: _custom("image"),
    "hunyuan-custom-audio": lambda: _custom("audio"),
    "hunyuan-custom-editing": lambda: _custom("editing"),
    "hunyuan-avatar": _avatar,
    "hunyuan-avatar-emotion": lambda: _avatar(emotion=True),
    "humo": _humo,
    "tiny": _tiny,
    "demo": _demo,
    "tiny-i2v": _tiny_i2v,
    "tiny-custom": lambda: _custom("image", tiny=True),
    "tiny-custom-audio": lambda: _custom("audio", tiny=True),
    "tiny-custom-editing": lambda: _custom("editing", tiny=True),
    "tiny-avatar": lambda: _avatar(tiny=True),
    "tiny-avatar-emotion": lambda: _avatar(tiny=True, emotion=True),
    "tiny-humo": lambda: _humo(tiny=True),
}


def names() -> list[str]:
    """Names of all presets."""
    return list(_PRESETS)


def get(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}")
    return _PRESETS[name]()
