"""The conditioning inputs of an ahead-of-time compile (``hcjax.training.aot``): HunyuanCustom's reference,
audio and editing inputs as abstract batch entries, the ``cond`` the DiT gets from them, the defaults a preset
implies (reference count, text length, CFG batch) and the FLOPs the mechanisms add to the blocks'.

The inputs travel in the batch dict (``ref_latents``, ``audio_feats``, ``bg_latents``), so they are sharded like
the rest of the batch (samples over the data axes) and reach the train step through ``make_cond``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from hcjax.conditioning.audio import video_frames
from hcjax.conditioning.custom_cond import CustomCond
from hcjax.configs import DiTConfig, Preset
from hcjax.training.custom_cond import custom_inputs


def default_ref_frames(preset: Preset) -> int:
    """Reference subjects of a sampling / training call: one for models with identity references, else none."""
    return 1 if preset.mechanism("identity") is not None else 0


def default_text_len(preset: Preset, ref_frames: int) -> int:
    """Text tokens the model sees: 256, plus each subject image's 576 LLaVA features in place of its
    ``<image>`` token (575 more each) for models with identity references (831 for one subject)."""
    from hcjax.models.text.templates import MAX_TEXT
    from hcjax.pipelines.custom_text import IMAGE_FEATURES

    if preset.mechanism("identity") is None:
        return MAX_TEXT
    return MAX_TEXT + ref_frames * (IMAGE_FEATURES - 1)


def default_cfg_batch(preset: Preset) -> bool:
    """Whether one sampling step is a forward of ``[uncond, cond]``: the preset samples with classic CFG."""
    return preset.sampler.cfg_scale != 1.0


def fit_mechanisms(cfg: DiTConfig) -> DiTConfig:
    """``cfg`` with the audio adapter's hooks cut to the double blocks that exist (a reduced ``depth_double``
    for quick checks keeps the hooks after blocks ``1, 3, ... < depth_double``); the full depth is unchanged."""
    fitted = []
    for mech in cfg.mechanisms:
        blocks = getattr(mech, "double_blocks", None)
        if blocks is not None:
            mech = dataclasses.replace(mech, double_blocks=tuple(i for i in blocks if i < cfg.depth_double))
        fitted.append(mech)
    return cfg.replace(mechanisms=tuple(fitted))


def describe(cfg: DiTConfig) -> tuple[str, ...]:
    """The non-identity mechanisms of ``cfg`` for a report: ``audio after double blocks 1,3,...``, ``editing``."""
    out = []
    for m in cfg.mechanisms:
        if m.name == "audio":
            out.append(f"audio after double blocks {','.join(map(str, m.double_blocks)) or '(none)'}")
        elif m.name != "identity":
            out.append(m.name)
    return tuple(out)


def cond_inputs(cfg: DiTConfig, latents: jax.ShapeDtypeStruct, ref_frames: int) -> dict:
    """Abstract conditioning entries of a batch whose ``latents [B, T, h, w, C]`` are given, for the
    mechanisms of ``cfg``: ``ref_latents [B, ref_frames, h, w, C]`` (identity, when ``ref_frames > 0``),
    ``audio_feats [B, 4 (T - 1) + 1, window, layers, channels]`` (audio), ``bg_latents [B, T, h, w, 2C]``
    (editing), ``first_latents [B, 1, h, w, C]`` (token replacement); all float32 like the rest of the batch."""
    b, t, h, w, c = latents.shape
    s, out = jax.ShapeDtypeStruct, {}
    names = {m.name: m for m in cfg.mechanisms}
    if ref_frames and "identity" in names:
        out["ref_latents"] = s((b, ref_frames, h, w, c), jnp.float32)
    if "audio" in names:
        m = names["audio"]
        out["audio_feats"] = s((b, video_frames(t), m.window, m.layers, m.channels), jnp.float32)
    if "editing" in names:
        out["bg_latents"] = s((b, t, h, w, 2 * c), jnp.float32)
    if "token_replace" in names:
        out["first_latents"] = s((b, 1, h, w, c), jnp.float32)
    return out


def cond_fn(cfg: DiTConfig, batch: dict) -> Callable[[dict, jax.Array], CustomCond] | None:
    """The training loop's ``make_cond(batch, key)`` (``training.custom_cond``: cast to the compute dtype,
    ``audio_strength`` 1.0, no dropout, so every condition is kept, the most work a step does) for the
    conditioning entries ``batch`` holds; None when it holds none."""
    inputs = custom_inputs(cfg)
    kept = () if inputs is None else tuple(e for e in inputs.extra if e[0] in batch)
    return dataclasses.replace(inputs, extra=kept).make_cond if kept else None


def cond_flops(cfg: DiTConfig, video_tokens: int, latent_frames: int) -> float:
    """Forward FLOPs per sample that the mechanisms add to ``dit_config_flops`` (which counts the reference
    tokens as video-side tokens): the audio projection and cross-attention at each hook, the editing input's
    patch embedding and projection. Matmuls only."""
    d, total = cfg.hidden_size, 0.0
    p = cfg.patch_volume
    for m in cfg.mechanisms:
        if m.name == "audio":
            frames = video_frames(latent_frames)
            audio = 4 * latent_frames * m.tokens_per_frame           # audio tokens after the alignment
            window = m.window * m.layers * m.channels
            total += 2 * frames * (window * m.hidden + m.hidden * m.hidden + m.hidden * m.tokens_per_frame * d)
            per_hook = (2 * video_tokens * d * m.hidden                # to_q
                        + 2 * audio * d * 2 * m.hidden                 # to_kv
                        + 4 * video_tokens * 4 * m.tokens_per_frame * m.hidden   # logits and weights @ v
                        + 2 * video_tokens * m.hidden * d)             # to_out
            total += len(m.double_blocks) * per_hook
        elif m.name == "editing":
            total += 2 * video_tokens * (2 * cfg.in_channels * p * d + d * d)
    return total
