"""What training feeds HuMo's mechanisms (``conditioning.humo``, ``humo_audio``, ``mask_predictor``): the record
keys, ``make_cond(batch, key)`` -> ``HumoCond``, and the focus-by-predicting loss on the mask head's logits.

Keys per mechanism (latents scaled, channels last; ``T``, ``H``, ``W`` those of the record's ``latents``):

* ``reference`` (``HumoReference``) reads ``ref_latents [n_ref, H, W, C]``: one latent frame per reference image.
* ``audio`` (``HumoAudio``) reads ``audio_feats [T, 8, 5, c]``: HuMo's windows of the clip's latent frames.
* ``mask_predictor`` (``HumoMaskPredictor``) reads ``face_mask [1 or T, H, W]`` in [0, 1] at latent size.

Tasks (``training.task_mixer``, the batch's ``task`` when the data pipeline mixes them): a subject-preservation
sample (``TASK_SUBJECT``) sees zero audio and no mask loss; an audio-visual-sync sample (``TASK_AUDIO``) sees its
audio and is supervised by its face mask. Without a ``task`` key every sample is an audio task.

Condition dropout for the time-adaptive CFG's branches: text (``loss.text_dropout``), the reference
(``cond.image_dropout``: the zero frame, HuMo's "no image") and the audio (``cond.audio_dropout``: zero windows)
are dropped independently, so every branch ``e(T / T-, I / 0, A / 0)`` is trained.

Focus-by-predicting loss (paper Sec. 3, our reading): a size-aware binary cross-entropy between the predicted
face probabilities and the face mask, the face and the background each averaged over their own pixels (so a small
face weighs as much as a large one), summed; weighted by ``cond.mask_loss_weight``, decayed linearly to
``cond.mask_loss_end_weight`` over ``cond.mask_loss_decay_steps`` (0: constant), a soft regulariser.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning.humo import HumoReference
from hcjax.conditioning.humo_audio import HumoAudio
from hcjax.conditioning.humo_cond import HumoCond
from hcjax.conditioning.mask_predictor import HumoMaskPredictor, predicted_mask
from hcjax.configs import resolve_dtype
from hcjax.training.custom_cond import (CondSettings, CustomInputs, Extra, drop_samples, mask_range_problems,
                                        refuse_audio_strength)
from hcjax.training.data_spec import DataSpec
from hcjax.training.task_mixer import TASK_AUDIO

HUMO_MECHANISMS = (HumoReference, HumoAudio, HumoMaskPredictor)


def is_humo(model) -> bool:
    """Whether ``model`` (a ``Preset`` or ``DiTConfig``) carries any of HuMo's mechanisms."""
    return any(isinstance(m, HUMO_MECHANISMS) for m in getattr(model, "dit", model).mechanisms)


def humo_record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of the keys HuMo's mechanisms of ``model`` read."""
    cfg = getattr(model, "dit", model)
    out = []
    for m in cfg.mechanisms:
        if isinstance(m, HumoReference):
            out.append(("ref_latents", (None, "H", "W", cfg.in_channels), "float32"))
        elif isinstance(m, HumoAudio):
            out.append(("audio_feats", ("T", m.window, m.groups, m.channels), "float32"))
        elif isinstance(m, HumoMaskPredictor):
            out.append(("face_mask", (None, "H", "W"), "float32"))
    return tuple(out)


def audio_samples(batch: dict) -> jax.Array:
    """``[B]`` float: 1 for the batch's audio-visual-sync samples (all of them without a ``task`` key)."""
    if "task" not in batch:
        return jnp.ones((batch["latents"].shape[0],), jnp.float32)
    return (jnp.asarray(batch["task"]) == TASK_AUDIO).astype(jnp.float32)


def balanced_bce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """``[B]`` size-aware BCE: mean over the face pixels of ``-log p`` plus mean over the rest of ``-log(1 - p)``
    (soft targets weigh both terms); fp32."""
    logits, target = logits.astype(jnp.float32), target.astype(jnp.float32)
    axes = tuple(range(1, logits.ndim))
    face = jnp.sum(target * -jax.nn.log_sigmoid(logits), axes) / jnp.maximum(jnp.sum(target, axes), 1.0)
    rest = jnp.sum((1 - target) * -jax.nn.log_sigmoid(-logits), axes) / jnp.maximum(jnp.sum(1 - target, axes), 1.0)
    return face + rest


def mask_loss_weight(settings: CondSettings, step: jax.Array) -> jax.Array:
    """The focus-by-predicting loss weight at ``step`` (linear decay, then constant)."""
    w0, w1, n = settings.mask_loss_weight, settings.mask_loss_end_weight, settings.mask_loss_decay_steps
    if n <= 0:
        return jnp.asarray(w0, jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / n, 0.0, 1.0)
    return (w0 + (w1 - w0) * frac).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class HumoInputs(CustomInputs):
    """``CustomInputs`` (keys, record checks) whose ``make_cond`` builds a ``HumoCond`` and whose ``aux_loss`` is
    the focus-by-predicting loss (``None`` for a model without a mask head)."""

    mask_head: str | None = None     # the HumoMaskPredictor's mechanism name
    key_help: ClassVar[dict[str, str]] = {
        "ref_latents": "ref_latents (one latent frame per reference image)",
        "audio_feats": "audio_feats (HuMo windows per latent frame, audio_condition(task='humo'))",
        "face_mask": "face_mask (the face region in [0, 1], 1 or T frames)"}

    def make_cond(self, batch: dict, key: jax.Array) -> HumoCond:
        k_ref, k_audio = jax.random.split(key)
        arrays = {k: jnp.asarray(batch[k]).astype(self.dtype) for k in self.keys if k != "face_mask"}
        if "ref_latents" in arrays:
            arrays["ref_latents"] = drop_samples(k_ref, arrays["ref_latents"], self.settings.image_dropout)
        if "audio_feats" in arrays:
            feats = arrays["audio_feats"] * audio_samples(batch).reshape(-1, 1, 1, 1, 1).astype(self.dtype)
            arrays["audio_feats"] = drop_samples(k_audio, feats, self.settings.audio_dropout)
        return HumoCond(**arrays)

    @property
    def aux_loss(self):
        """``aux_loss(batch, predictions, step) -> (loss, metrics)`` for ``training.step``, or ``None``."""
        if self.mask_head is None or self.settings.mask_loss_weight == 0 and self.settings.mask_loss_end_weight == 0:
            return None
        return self._mask_loss

    def _mask_loss(self, batch: dict, predictions: dict, step: jax.Array) -> tuple[jax.Array, dict]:
        logits = predicted_mask(predictions, self.mask_head)                 # [B, T, H, W]
        target = jnp.broadcast_to(jnp.asarray(batch["face_mask"], jnp.float32), logits.shape)
        per_sample = balanced_bce(logits, target)
        on = audio_samples(batch)
        loss = jnp.sum(per_sample * on) / jnp.maximum(jnp.sum(on), 1.0)
        weight = mask_loss_weight(self.settings, step)
        return weight * loss, {"mask_loss": loss, "mask_loss_weight": weight}

    def record_problems(self, record: dict, spec: DataSpec) -> list[str]:
        out = super().record_problems(record, spec)
        mask, lat = record.get("face_mask"), record.get("latents")
        if "face_mask" in self.keys and isinstance(mask, np.ndarray) and mask.ndim == 3 and mask.size:
            out += mask_range_problems(mask)
            if isinstance(lat, np.ndarray) and mask.shape[0] not in (1, lat.shape[0]):
                out.append(f"face_mask has {mask.shape[0]} frames, needs 1 or the clip's {lat.shape[0]}")
        return out


def humo_inputs(model, settings: CondSettings = CondSettings()) -> HumoInputs | None:
    """What training feeds HuMo's mechanisms of ``model``, in its compute dtype; ``None`` without any."""
    if not is_humo(model):
        return None
    refuse_audio_strength(settings, "HuMo's audio attention")
    cfg = getattr(model, "dit", model)
    head = next((m.name for m in cfg.mechanisms if isinstance(m, HumoMaskPredictor)), None)
    return HumoInputs(humo_record_extras(cfg), settings, resolve_dtype(cfg.dtype), mask_head=head)
