"""HunyuanCustom's step cache (``use_deepcache``, reference section 6.4).

With exactly 30 steps, steps 11, 12, 14, 15, 17, 18, 20 and 21 (0-based) are *cached*: the DiT skips its
double blocks (and the audio injection) and all single blocks but the last, which runs on the input it had at
the most recent full step, with the current timestep's modulation. Other step counts run every step in full,
as the official pipeline does. The cache is part of the compiled sampling loop's carry.
"""

from __future__ import annotations

import numpy as np

CACHE_STEPS = 30
CACHED_STEPS = (11, 12, 14, 15, 17, 18, 20, 21)


def cached_steps(num_steps: int, enabled: bool = True) -> np.ndarray:
    """Bool ``[num_steps]``: which steps reuse the cache (all False unless ``enabled`` and 30 steps)."""
    out = np.zeros(num_steps, bool)
    if enabled and num_steps == CACHE_STEPS:
        out[list(CACHED_STEPS)] = True
    return out


# HunyuanVideo-Avatar (reference A.5): every step is cached except these (0-based), whatever the step count.
AVATAR_FULL_STEPS = tuple(range(15)) + tuple(range(15, 42, 5)) + tuple(range(41, 50))


def avatar_cached_steps(num_steps: int, enabled: bool = True) -> np.ndarray:
    """Bool ``[num_steps]``: Avatar's cached steps, the official fixed list (16-19, 21-24, 26-29, 31-34, 36-39 of
    50; the same indices below ``num_steps`` for other counts)."""
    out = np.zeros(num_steps, bool)
    if enabled:
        out[[i for i in range(num_steps) if i not in AVATAR_FULL_STEPS]] = True
    return out
