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
