"""What training feeds an image-to-video DiT with token replacement (HunyuanVideo-I2V, ``TokenReplace``).

At sampling the first latent frame is the image latent, never noised, and the DiT modulates its tokens as clean
(``hcjax.conditioning.token_replace``). Training matches that: the record key ``first_latents [1, H, W, C]`` holds
the clip's first frame encoded alone (a VAE posterior sample times the scaling factor, as the official I2V
training re-encodes it), the train step puts it, clean, in place of the noisy first latent frame of ``x_t``, and
the velocity loss covers only the frames after it (the sampler overwrites the first frame's velocity anyway).
The mechanism itself reads no ``cond``. Text dropout still applies; the first frame is never dropped (the
sampler's unconditional branch keeps it too).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.training.custom_cond import CondSettings, CustomInputs, Extra

FIRST_LATENTS = "first_latents"


def is_i2v(model) -> bool:
    """Whether ``model`` (a ``Preset`` or ``DiTConfig``) animates a clean first frame (token replacement)."""
    return any(m.name == "token_replace" for m in getattr(model, "dit", model).mechanisms)


def i2v_record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of an I2V model: ``first_latents [1, H, W, C]``."""
    return ((FIRST_LATENTS, (1, "H", "W", getattr(model, "dit", model).in_channels), "float32"),)


@dataclasses.dataclass(frozen=True)
class I2VInputs(CustomInputs):
    """``CustomInputs`` (keys, record checks) of an I2V model: no ``cond``, and ``clean_lead`` for the step."""

    def make_cond(self, batch: dict, key: jax.Array) -> None:
        return None

    @property
    def clean_lead(self) -> Callable[[dict], jax.Array]:
        """``clean_lead(batch) -> [B, 1, H, W, C]``: the clean latent frames that lead every sample."""
        return lambda batch: jnp.asarray(batch[FIRST_LATENTS]).astype(jnp.float32)


def i2v_inputs(model, settings: CondSettings = CondSettings()) -> I2VInputs | None:
    """What training feeds an I2V ``model``; ``None`` for a model without token replacement."""
    if not is_i2v(model):
        return None
    if settings.audio_dropout or settings.audio_strength != 1.0:
        raise ValueError("cond.audio_dropout / cond.audio_strength are for audio models; an image-to-video model "
                         "has no audio: leave them at 0 and 1")
    return I2VInputs(i2v_record_extras(model), settings, resolve_dtype(getattr(model, "dit", model).dtype))
