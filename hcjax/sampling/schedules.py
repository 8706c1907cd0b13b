"""The flow-matching noise schedule of the reference sampler, bit for bit in float32.

``sigma`` runs from 1 (pure noise) to 0 (clean); the model sees ``timestep = sigma * 1000``. The reference
builds ``torch.linspace(1, 0, N + 1)`` in float32 and applies the SD3 shift ``s*x / (1 + (s-1)*x)`` with
float32 tensor ops; both are reproduced here exactly (the test compares against PyTorch for many N).
"""

from __future__ import annotations

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` on CPU in float32: a float32 step, the first half counted up
    from ``start`` and the second half down from ``end``, each value one fused multiply-add (one rounding)."""
    if steps == 1:
        return np.array([start], np.float32)
    step = np.float64(np.float32(np.float32(end) - np.float32(start)) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    up = np.float64(np.float32(start)) + step * i           # exact in float64, rounded once below
    down = np.float64(np.float32(end)) - step * (steps - 1 - i)
    return np.where(i < steps // 2, up, down).astype(np.float32)


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The SD3 time shift ``s*x / (1 + (s-1)*x)`` in float32 (``shift`` > 1 spends more steps at high noise)."""
    x = np.asarray(sigmas, np.float32)
    s = np.float32(shift)
    return ((s * x) / (np.float32(1.0) + np.float32(shift - 1.0) * x)).astype(np.float32)


def flow_sigmas(num_steps: int, shift: float = 1.0) -> np.ndarray:
    """``[num_steps + 1]`` float32 sigmas from 1 down to 0 (the reference's ``flow_reverse`` direction)."""
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not np.isfinite(shift) or shift <= 0:
        raise ValueError(f"flow shift must be a positive number, got {shift!r} (the official values are 1 to 17)")
    return shift_sigmas(_torch_linspace_f32(1.0, 0.0, int(num_steps) + 1), shift)


def flow_timesteps(sigmas: np.ndarray) -> np.ndarray:
    """The model's timesteps ``sigma * 1000`` for every step (``[num_steps]``, float32, not rounded)."""
    return (np.asarray(sigmas, np.float32)[:-1] * np.float32(NUM_TRAIN_TIMESTEPS)).astype(np.float32)
