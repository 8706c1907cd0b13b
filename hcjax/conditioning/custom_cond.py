"""``CustomCond``: the conditioning inputs of the HunyuanCustom models, passed to the DiT as ``cond=``."""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class CustomCond:
    """Latents are scaled by the VAE's scaling factor and channels-last.

    * ``ref_latents [B, n_subjects, h, w, C]``: one latent frame per reference image (identity), at the video's
      latent size; ``None`` or ``n_subjects = 0``: no reference.
    * ``bg_latents [B, T, h, w, 2C]``: masked-video latents ++ mask latents (the editing model); ``None``: none.
    * ``audio_feats [B, F, 10, 5, 384]``: Whisper windows per video frame, ``F = 4 (T - 1) + 1`` (the audio
      model); ``None``: no audio.
    * ``audio_strength``: scale of the audio cross-attention's output (official default 1.0, scripts 0.8).
    """

    ref_latents: jax.Array | None = None
    bg_latents: jax.Array | None = None
    audio_feats: jax.Array | None = None
    audio_strength: float | jax.Array = 1.0
