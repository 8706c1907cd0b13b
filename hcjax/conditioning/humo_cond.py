"""``HumoCond``: the conditioning inputs of HuMo's mechanisms on this backbone, passed to the DiT as ``cond=``."""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class HumoCond:
    """Latents are scaled by the VAE's scaling factor and channels-last.

    * ``ref_latents [B, n_ref, h, w, C]``: one clean latent frame per reference image (the image fitted into a
      white canvas of the video size, encoded as a one-frame video), appended after the video along time.
      HuMo's "no image" is one all-zero frame, not ``None``: ``None`` means the model sees no reference frames.
    * ``audio_feats [B, T, 8, 5, 1280]``: HuMo's Whisper windows of the ``T`` video latent frames
      (``conditioning.audio_features.audio_condition(task="humo")``), or ``[B, T + n_ref, ...]`` with the
      reference slots' (zero) windows already appended. HuMo's "no audio" is all-zero windows.
    """

    ref_latents: jax.Array | None = None
    audio_feats: jax.Array | None = None
