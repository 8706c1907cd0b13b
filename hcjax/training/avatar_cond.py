"""What training feeds HunyuanVideo-Avatar's mechanisms: the record keys a model reads and the ``make_cond(batch,
key)`` that builds its ``AvatarCond`` (the Avatar analogue of ``training.custom_cond``).

Keys per mechanism (``DiTConfig.mechanisms``; latents scaled by the VAE's scaling factor, channels last, ``T``,
``H``, ``W`` those of the record's ``latents [T, H, W, C]``):

* ``reference`` (``AvatarReference``) reads ``ref_latents [1, H, W, C]``: one latent frame of the character image;
  ``make_cond`` repeats it over the clip's ``T`` latent frames, as the sampler's static clip.
* ``face_audio`` (``AvatarAudio``) reads ``audio_feats [F, 10, 5, c]`` (the Whisper windows of the
  ``F = 4 (T - 1) + 1`` video frames) and ``face_mask [1, H, W]`` (the face region at latent size, in [0, 1]).
* ``motion`` (``AvatarMotion``) reads nothing: the official constants (motion 30 / 25, fps 25).
* ``emotion`` (``AvatarEmotion``) reads ``emotion_latents [1, H, W, C]``: one latent frame of the emotion image.

Condition dropout follows the Avatar sampler's unconditional branch, which zeroes the audio and keeps the reference
and the face mask: a sample's ``audio_feats`` become zeros with probability ``cond.audio_dropout``; the emotion
image is always kept. Avatar has no audio strength (``cond.audio_strength`` must stay 1).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import einops
import jax
import jax.numpy as jnp

from hcjax.conditioning.avatar import AvatarMotion, AvatarReference
from hcjax.conditioning.avatar_audio import AvatarAudio
from hcjax.conditioning.avatar_cond import AvatarCond
from hcjax.conditioning.emotion import AvatarEmotion
from hcjax.configs import resolve_dtype
from hcjax.training.custom_cond import (CondSettings, CustomInputs, Extra, drop_samples, mask_range_problems,
                                        refuse_audio_strength)
from hcjax.training.data_spec import DataSpec

AVATAR_MECHANISMS = (AvatarReference, AvatarAudio, AvatarMotion, AvatarEmotion)


def is_avatar(model) -> bool:
    """Whether ``model`` (a ``Preset`` or ``DiTConfig``) carries any HunyuanVideo-Avatar mechanism."""
    return any(isinstance(m, AVATAR_MECHANISMS) for m in getattr(model, "dit", model).mechanisms)


def avatar_record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of the keys the Avatar mechanisms of ``model`` (a ``Preset`` or ``DiTConfig``) read."""
    cfg = getattr(model, "dit", model)
    c, out = cfg.in_channels, []
    for m in cfg.mechanisms:
        if isinstance(m, AvatarReference):
            out.append(("ref_latents", (1, "H", "W", c), "float32"))
        elif isinstance(m, AvatarAudio):
            out.append(("audio_feats", (None, m.window, m.layers, m.channels), "float32"))
            out.append(("face_mask", (1, "H", "W"), "float32"))
        elif isinstance(m, AvatarEmotion):
            out.append(("emotion_latents", (1, "H", "W", c), "float32"))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class AvatarInputs(CustomInputs):
    """``CustomInputs`` (keys, record checks) whose ``make_cond`` builds an ``AvatarCond``."""

    key_help: ClassVar[dict[str, str]] = {
        "ref_latents": "ref_latents (the character image's latent frame)",
        "audio_feats": "audio_feats (Whisper windows, hcjax.conditioning.audio_features)",
        "face_mask": "face_mask (the face region in [0, 1])",
        "emotion_latents": "emotion_latents (the emotion image's latent frame)"}

    def make_cond(self, batch: dict, key: jax.Array) -> AvatarCond:
        """``AvatarCond`` of a batch (``latents`` and the ``[B, ...]`` arrays of ``keys``), the audio dropped to
        zeros per sample with probability ``audio_dropout``."""
        arrays = {k: jnp.asarray(batch[k]).astype(self.dtype) for k in self.keys}
        if "ref_latents" in arrays:
            arrays["ref_latents"] = jnp.repeat(arrays["ref_latents"], batch["latents"].shape[1], axis=1)
        if "emotion_latents" in arrays:
            arrays["emotion_latents"] = einops.rearrange(arrays["emotion_latents"], "b 1 h w c -> b h w c")
        if "audio_feats" in arrays:
            arrays["audio_feats"] = drop_samples(key, arrays["audio_feats"], self.settings.audio_dropout)
        return AvatarCond(**arrays)

    def record_problems(self, record: dict, spec: DataSpec) -> list[str]:
        out = super().record_problems(record, spec)
        return out + (mask_range_problems(record.get("face_mask")) if "face_mask" in self.keys else [])


def avatar_inputs(model, settings: CondSettings = CondSettings()) -> AvatarInputs | None:
    """What training feeds the Avatar mechanisms of ``model``, in its compute dtype; ``None`` without any."""
    if not is_avatar(model):
        return None
    refuse_audio_strength(settings, "HunyuanVideo-Avatar")
    cfg = getattr(model, "dit", model)
    return AvatarInputs(avatar_record_extras(cfg), settings, resolve_dtype(cfg.dtype))
