"""``AvatarCond``: the conditioning inputs of HunyuanVideo-Avatar, passed to the DiT as ``cond=``."""

from __future__ import annotations

import dataclasses

import jax

MOTION_EXP = 30.0     # the official inference constants (reference A.2.5)
MOTION_POSE = 25.0
FPS = 25.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class AvatarCond:
    """Latents are scaled by the VAE's scaling factor and channels-last.

    * ``ref_latents [B, T, h, w, C]``: the latents of the reference image repeated over the window's ``T`` latent
      frames (the VAE posterior sample of a static clip); frame 0 is also prepended at time -1.
    * ``audio_feats``: Whisper windows per video frame, ``[B, F, 10, 5, 384]`` with ``F = 4 (T - 1) + 1``, or
      ``[B, K, F, 10, 5, 384]`` for ``K`` characters, each driving its own face.
    * ``face_mask``: ``[B, 1 or T, h', w']`` in [0, 1] (``[B, K, 1 or T, h', w']`` for ``K`` characters), at any
      size; the model takes it to the token grid by nearest resizing, as the reference does. ``None``: the audio
      acts on every token (a full mask).
    * ``motion_exp [B, 4]``, ``motion_pose [B, 4]``, ``fps [B]``: the extra modulation inputs; ``None`` means the
      official constants 30, 25 and 25.0.
    * ``emotion_latents [B, h, w, C]``: one latent frame of an emotion reference image, read by the audio emotion
      module (``conditioning.emotion``), which no released checkpoint has; ``None``: no emotion reference.
    """

    ref_latents: jax.Array | None = None
    audio_feats: jax.Array | None = None
    face_mask: jax.Array | None = None
    motion_exp: jax.Array | None = None
    motion_pose: jax.Array | None = None
    fps: jax.Array | None = None
    emotion_latents: jax.Array | None = None
