"""What training feeds HunyuanCustom's conditioning mechanisms: the extra record keys a model reads and the
``make_cond(batch, key)`` that builds its ``CustomCond``.

One record key per mechanism of the model (``DiTConfig.mechanisms``); latents are scaled by the VAE's scaling
factor and channels last, and every key's ``T``, ``H``, ``W`` are those of the record's ``latents [T, H, W, C]``:

* ``identity`` reads ``ref_latents [n, H, W, C]``: one latent frame per subject image (the VAE posterior sample
  of the image padded to the video size); ``n`` is the same for all clips of a latent bucket.
* ``audio`` reads ``audio_feats [F, 10, 5, c]``: the Whisper windows of the ``F = 4 (T - 1) + 1`` video frames
  (``hcjax.conditioning.audio_features.audio_condition``), ``c`` the mechanism's ``channels``.
* ``editing`` reads ``bg_latents [T, H, W, 2C]``: masked-video latents ++ mask latents (posterior samples).

Condition dropout for classifier-free guidance follows HunyuanCustom's sampler, whose unconditional branch keeps
the reference latents and the masked video and zeroes the audio: ``ref_latents`` and ``bg_latents`` are always
kept, and a sample's ``audio_feats`` become zeros with probability ``audio_dropout``, drawn independently of the
text dropout (``loss.text_dropout``), so both go together with the product of the two probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning.audio import video_frames
from hcjax.conditioning.custom_cond import CustomCond
from hcjax.configs import resolve_dtype
from hcjax.training.data_spec import DataSpec, record_problems

Extra = tuple[str, tuple, str]
PRECOMPUTE = {"ref_latents": "--ref-images DIR (or the clip's first frame)", "audio_feats": "--audio DIR",
              "bg_latents": "--masks DIR",
              "first_latents": "an image-to-video --model, e.g. hunyuan-video-i2v: its first frame is encoded alone"}


@dataclasses.dataclass(frozen=True)
class CondSettings:
    """The experiment config's ``cond`` section: ``audio_dropout`` (probability of training a sample with zero
    audio), ``audio_strength`` (scale of the audio cross-attention, as at sampling), and HuMo's
    (``training.humo_cond``): ``image_dropout`` (probability of the zero reference frame) and the focus-by-predicting
    loss weight, decayed linearly from ``mask_loss_weight`` to ``mask_loss_end_weight`` over
    ``mask_loss_decay_steps`` (0: constant)."""

    audio_dropout: float = 0.0
    audio_strength: float = 1.0
    image_dropout: float = 0.0
    mask_loss_weight: float = 0.1
    mask_loss_end_weight: float = 0.1
    mask_loss_decay_steps: int = 0

    def __post_init__(self):
        problems = [f"cond.{k} must be in [0, 1], got {getattr(self, k)}" for k in ("audio_dropout", "image_dropout")
                    if not 0 <= getattr(self, k) <= 1]
        problems += [f"cond.{k} must be >= 0, got {getattr(self, k)}"
                     for k in ("mask_loss_weight", "mask_loss_end_weight", "mask_loss_decay_steps")
                     if getattr(self, k) < 0]
        if problems:
            raise ValueError("; ".join(problems))


def record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of the keys the mechanisms of ``model`` (a ``Preset`` or ``DiTConfig``) read; ``()``
    for a model without HunyuanCustom mechanisms."""
    cfg = getattr(model, "dit", model)
    c = cfg.in_channels
    mechs = {m.name: m for m in cfg.mechanisms}
    out = []
    if "identity" in mechs:
        out.append(("ref_latents", (None, "H", "W", c), "float32"))
    if "audio" in mechs:
        a = mechs["audio"]
        out.append(("audio_feats", (None, a.window, a.layers, a.channels), "float32"))
    if "editing" in mechs:
        out.append(("bg_latents", ("T", "H", "W", 2 * c), "float32"))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class CustomInputs:
    """The record keys a model reads (``extra``) and how a batch of them becomes its ``cond``."""

    extra: tuple[Extra, ...]
    settings: CondSettings = CondSettings()
    dtype: Any = jnp.float32
    key_help: ClassVar[dict[str, str] | None] = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _, _ in self.extra)

    def make_cond(self, batch: dict, key: jax.Array) -> CustomCond:
        """``CustomCond`` of a batch (``[B, ...]`` arrays of ``keys``), the audio dropped to zeros per sample
        with probability ``audio_dropout`` (``key``: the step's randomness for this micro-batch)."""
        arrays = {k: jnp.asarray(batch[k]).astype(self.dtype) for k in self.keys}
        if "audio_feats" in arrays:
            arrays["audio_feats"] = drop_samples(key, arrays["audio_feats"], self.settings.audio_dropout)
        return CustomCond(**arrays, audio_strength=self.settings.audio_strength)

    @property
    def fix(self) -> str:
        """How to make a dataset that has the model's keys (``key_help``: what each key holds, for the families
        whose keys are described rather than named by the tool's flags)."""
        if self.key_help is not None:
            return ("give the dataset these keys per clip (latents scaled, channels last, at the clip's latent size): "
                    + ", ".join(self.key_help[k] for k in self.keys))
        return ("precompute the dataset for this model with tools/precompute_dataset.py --model MODEL (" +
                ", ".join(PRECOMPUTE[k] for k in self.keys) + ")")

    def record_problems(self, record: dict, spec: DataSpec) -> list[str]:
        """How ``record`` fails the model's keys: ``spec``'s checks with the model's patterns for its keys, and
        the audio's frame count."""
        mine = set(self.keys)
        wanted = dataclasses.replace(spec, extra=tuple(e for e in spec.extra if e[0] not in mine) + self.extra)
        out = record_problems(record, wanted)
        feats, lat = record.get("audio_feats"), record.get("latents")
        per_video_frame = any(k == "audio_feats" and shape[0] is None for k, shape, _ in self.extra)
        if per_video_frame and getattr(feats, "ndim", 0) == 4 and getattr(lat, "ndim", 0) == 4:
            want = video_frames(lat.shape[0])
            if feats.shape[0] != want:
                out.append(f"audio_feats has {feats.shape[0]} frames, the {lat.shape[0]} latent frames need "
                           f"{want} (4 (T - 1) + 1)")
        return out

    def check_source(self, source, num_records: int = 4) -> None:
        """Before training: ``source`` declares every key the model reads and its first records fit them; else
        one ``ValueError`` naming the keys and the fix."""
        declared = {k for k, _, _ in source.spec.extra}
        missing = [(k, shape) for k, shape, _ in self.extra if k not in declared]
        fix = self.fix
        if missing:
            what = ", ".join(f"{k!r} {_pattern(s)}" for k, s in missing)
            raise ValueError(f"{source.name} has no {what}, which the model's conditioning mechanisms read. "
                             f"Fix: {fix}, or train a model without them")
        for i in range(min(num_records, len(source))):
            problems = self.record_problems(source[i], source.spec)
            if problems:
                raise ValueError(f"{source.name}: record {i}: {'; '.join(problems)}. Fix: {fix}")


def drop_samples(key: jax.Array, x: jax.Array, p: float) -> jax.Array:
    """``x [B, ...]`` with each sample replaced by zeros with probability ``p`` (condition dropout)."""
    if p <= 0:
        return x
    drop = jax.random.bernoulli(key, p, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(drop, jnp.zeros_like(x), x)


def mask_range_problems(mask) -> list[str]:
    """A record's ``face_mask`` outside [0, 1], as a problem."""
    if isinstance(mask, np.ndarray) and mask.size and (mask.min() < 0 or mask.max() > 1):
        return [f"face_mask has values in [{mask.min():g}, {mask.max():g}], needs [0, 1]"]
    return []


def refuse_audio_strength(settings: CondSettings, family: str) -> None:
    """Families whose audio has no strength knob take only ``cond.audio_strength`` 1."""
    if settings.audio_strength != 1.0:
        raise ValueError(f"cond.audio_strength is {settings.audio_strength}, but {family} has no audio strength; "
                         "leave it at 1.0")


def _pattern(shape: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def custom_inputs(model, settings: CondSettings = CondSettings()) -> CustomInputs | None:
    """What training feeds the mechanisms of ``model`` (a ``Preset`` or ``DiTConfig``), in its compute dtype;
    ``None`` for a model without HunyuanCustom mechanisms (its ``cond`` stays ``None``)."""
    extra = record_extras(model)
    if not extra:
        return None
    return CustomInputs(extra, settings, resolve_dtype(getattr(model, "dit", model).dtype))
