"""HunyuanVideo-Avatar's time-aware position-shift fusion (reference A.4): one continuous video of any length from
a model trained on windows of ``W`` latent frames.

For audio of ``A`` (padded) video frames the output keeps ``V = A // 4 + 1`` latent frames; the loop runs on a
circular latent of ``L = (A // (4 (W - 1)) + 1) (W - 1) + 1`` frames (``W = 33``: ``32 m + 1``) and audio padded to
``4 L`` frames. At every denoising step the windows start at ``0, W, 2W, ... (< L)`` minus the current ``shift``;
window ``s`` covers latent frames ``(s .. s + W - 1) mod L`` and audio frames ``(4 s .. 4 s + 4 W - 4) mod 4 L``;
each window takes one Euler step on its own, the results are summed per frame and divided by how often the step
covered the frame (frames covered twice are averaged). Then ``shift = (shift + offset) mod W``. When ``V`` or
``L`` equals ``W`` there is one window and no shift. Every window sees local positions 0..W-1.

``fused_sample`` is one compiled program: ``lax.fori_loop`` over steps, the windows unrolled (their number is
static), the shift a traced value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.sampling.euler import NUM_TRAIN_TIMESTEPS

FRAMES_PER_LATENT = 4


@dataclasses.dataclass(frozen=True)
class PositionShift:
    """Windows of ``window`` latent frames, shifted by ``offset`` frames per step (official: 33 and 10). Each
    window's Euler result is rounded to ``round_dtype`` and summed in ``buffer_dtype`` (official: bfloat16 and
    float16; None / float32 keep everything in float32)."""

    window: int = 33
    offset: int = 10
    round_dtype: str | None = "bfloat16"
    buffer_dtype: str = "float16"

    def __post_init__(self):
        if self.window < 2 or not 0 <= self.offset < self.window:
            raise ValueError(f"need window >= 2 and 0 <= offset < window, got {self.window}, {self.offset}")


def default_offset(window: int) -> int:
    """The official shift of 10 per 33 frames, scaled to another window length (at least 1)."""
    return max(1, round(window * 10 / 33))


@dataclasses.dataclass(frozen=True)
class LongVideoPlan:
    """The fusion's lengths for ``audio_frames`` padded audio frames (see the module docstring)."""

    audio_frames: int     # A
    kept: int             # V: latent frames of the output
    total: int            # L: latent frames of the circular loop
    window: int           # W
    offset: int           # 0 for a single window

    @property
    def num_windows(self) -> int:
        return math.ceil(self.total / self.window)

    @property
    def audio_total(self) -> int:
        """Audio frames of the circular loop: ``4 L`` (``4 W`` for a single window)."""
        return FRAMES_PER_LATENT * self.total

    def shifts(self, num_steps: int) -> np.ndarray:
        """``[num_steps]`` the shift at each step: ``i * offset mod W``."""
        return (np.arange(num_steps) * self.offset) % self.window

    def latent_indices(self, shift: int | jax.Array) -> Any:
        """``[num_windows, W]`` latent frames of each window at ``shift``."""
        starts = np.arange(0, self.total, self.window) - shift
        return (starts[:, None] + np.arange(self.window)[None]) % self.total

    def audio_indices(self, shift: int | jax.Array) -> Any:
        """``[num_windows, 4 W - 3]`` audio frames of each window at ``shift``."""
        starts = (np.arange(0, self.total, self.window) - shift) * FRAMES_PER_LATENT
        return (starts[:, None] + np.arange(FRAMES_PER_LATENT * self.window - 3)[None]) % self.audio_total

    def coverage(self, num_steps: int) -> np.ndarray:
        """``[num_steps, L]`` how many windows cover each latent frame at each step."""
        out = np.zeros((num_steps, self.total), np.int64)
        for i, shift in enumerate(self.shifts(num_steps)):
            np.add.at(out[i], self.latent_indices(int(shift)).reshape(-1), 1)
        return out


def plan_long_video(audio_frames: int, fusion: PositionShift) -> LongVideoPlan:
    """The official lengths (``pipeline_hunyuan_video_audio``) for ``audio_frames`` padded audio frames, with
    windows of ``fusion.window`` latent frames."""
    w = fusion.window
    span = FRAMES_PER_LATENT * (w - 1)
    if audio_frames < span + 1:
        raise ValueError(f"{audio_frames} audio frames: pad the audio to at least one window ({span + 1} frames)")
    kept = audio_frames // FRAMES_PER_LATENT + 1
    total = (audio_frames // span + 1) * (w - 1) + 1
    if kept == w or total == w:
        return LongVideoPlan(audio_frames, kept, w, w, 0)
    return LongVideoPlan(audio_frames, kept, total, w, fusion.offset)


WindowStep = Callable[..., tuple[jax.Array, Any]]


def fused_sample(window_step: WindowStep, noise: jax.Array, audio: jax.Array, sigmas, plan: LongVideoPlan,
                 fusion: PositionShift, state: Any = None, *, progress: Callable[[int], None] | None = None):
    """Position-shift fusion over a circular latent ``noise [B, L, h, w, C]`` with ``audio [B, 4 L, ...]``.

    ``window_step(x [B, W, h, w, C], audio [B, 4W - 3, ...], timestep [B], i, sigma, sigma_next, window, frames
    [W], state) -> (x_next, state)`` takes one Euler step of one window (``window`` its static index, ``frames``
    its latent frames; ``state`` is carried through windows and steps). Returns ``(latents [B, L, ...] float32,
    state)``; keep the first ``plan.kept`` frames."""
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if noise.shape[1] != plan.total or audio.shape[1] != plan.audio_total:
        raise ValueError(f"noise must have {plan.total} latent frames and audio {plan.audio_total} frames, got "
                         f"{noise.shape[1]} and {audio.shape[1]}")
    buffer = jnp.dtype(fusion.buffer_dtype)
    rounded = (lambda x: x) if fusion.round_dtype is None else (lambda x: x.astype(fusion.round_dtype))

    def body(i, carry):
        latents, state = carry
        shift = (i * plan.offset) % plan.window
        frames_all = plan.latent_indices(shift)
        audio_all = plan.audio_indices(shift)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        timestep = jnp.full((latents.shape[0],), sigma * NUM_TRAIN_TIMESTEPS, jnp.float32)
        acc = jnp.zeros(latents.shape, buffer)
        for w in range(plan.num_windows):
            frames = frames_all[w]
            x = jnp.take(latents, frames, axis=1).astype(jnp.float32)
            a = jnp.take(audio, audio_all[w], axis=1)
            x_next, state = window_step(x, a, timestep, i, sigma, sigma_next, w, frames, state)
            acc = acc.at[:, frames].add(rounded(x_next).astype(buffer))
        counts = jnp.zeros(plan.total, buffer).at[frames_all.reshape(-1)].add(1)   # which frames doubled: shift
        latents = (acc / counts.reshape(1, -1, *([1] * (latents.ndim - 2)))).astype(latents.dtype)
        if progress is not None:
            jax.debug.callback(progress, i)
        return latents, state

    latents = noise.astype(buffer if fusion.round_dtype is not None else jnp.float32)
    return jax.lax.fori_loop(0, sigmas.shape[0] - 1, body, (latents, state))
