"""HunyuanVideo-Avatar's guidance schedule (reference A.5): what the unconditional branch holds and how strongly
CFG pushes, step by step.

Steps ``i < switch`` (10): scale ``early_floor + (cfg - early_floor)(1 - i / n)`` (7.5 -> 6.51 of 50 steps), the
unconditional branch the negative text with zero audio, both branches' face masks times ``early_mask`` (0.6).
Steps ``i >= switch``: scale ``late_floor + (late_top - late_floor)(1 - i / n)`` (5.90 -> 3.56), the unconditional
branch the *positive* text with zero audio (pure audio guidance), masks times 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AvatarGuidance:
    cfg_scale: float = 7.5
    switch: int = 10
    early_floor: float = 2.0
    late_top: float = 6.5
    late_floor: float = 3.5
    early_mask: float = 0.6

    def scales(self, num_steps: int) -> np.ndarray:
        """``[num_steps]`` float32 CFG scales."""
        i = np.arange(num_steps, dtype=np.float64)
        early = (1 - i / num_steps) * (self.cfg_scale - self.early_floor) + self.early_floor
        late = (1 - i / num_steps) * (self.late_top - self.late_floor) + self.late_floor
        return np.where(i < self.switch, early, late).astype(np.float32)

    def mask_scales(self, num_steps: int) -> np.ndarray:
        """``[num_steps]`` float32 factors of the face masks."""
        return np.where(np.arange(num_steps) < self.switch, self.early_mask, 1.0).astype(np.float32)

    def negative_text(self, num_steps: int) -> np.ndarray:
        """``[num_steps]`` bool: whether the unconditional branch holds the negative text (else the positive)."""
        return np.arange(num_steps) < self.switch
