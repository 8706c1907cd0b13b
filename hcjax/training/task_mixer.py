"""HuMo's progressive task mix (arXiv 2509.08519): which training task each sample of a global batch serves.

Stage 1 (global batches ``k < stage1_steps``) trains subject preservation only (text + reference image). Stage 2
adds audio-visual sync (text + image + audio): its share starts at ``start_fraction`` (HuMo: 20 %) and rises
linearly over ``ramp_steps`` batches to ``end_fraction`` (HuMo: 50 %), then stays there.

Each row's task is drawn from a counter-based stream keyed by ``(seed, k)`` alone and indexed by the row's place
in the global batch, so every host computes its own share of the same global draw and a resumed data iterator
gets the same tasks (``make_iterator(..., task_mixer=mixer)`` adds them to each batch as ``task [b] int32``).
``k`` counts global batches (the data iterator's step), not optimizer updates.

    mixer = TaskMixer(stage1_steps=10_000, ramp_steps=5_000)
    mixer.audio_fraction(12_500)                 # 0.35
    mixer.draw(seed=0, batch_index=12_500, rows=np.arange(8))   # e.g. [0 1 0 0 1 0 0 1], int32
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["TASK_AUDIO", "TASK_NAMES", "TASK_SUBJECT", "TaskMixer"]

TASK_SUBJECT = 0          # subject preservation: text + reference image
TASK_AUDIO = 1            # audio-visual sync: text + reference image + audio
TASK_NAMES = ("subject_preservation", "audio_visual_sync")
_STREAM = 0x7461736B      # "task": keeps these draws apart from BatchPlan's default_rng([seed, epoch]) shuffles


@dataclasses.dataclass(frozen=True)
class TaskMixer:
    """The schedule of the audio-visual sync share and a deterministic per-sample task draw (see module doc)."""

    stage1_steps: int = 0
    ramp_steps: int = 0
    start_fraction: float = 0.2
    end_fraction: float = 0.5

    def __post_init__(self):
        problems = [f"{name} must be an int >= 0 (got {v!r})" for name in ("stage1_steps", "ramp_steps")
                    if not isinstance(v := getattr(self, name), (int, np.integer)) or isinstance(v, bool) or v < 0]
        problems += [f"{name} must be a number in [0, 1] (got {v!r})" for name in ("start_fraction", "end_fraction")
                     if not isinstance(v := getattr(self, name), (int, float, np.integer, np.floating))
                     or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0]
        if problems:
            raise ValueError("bad TaskMixer: " + "; ".join(problems) + ". Give batch counts as non-negative ints "
                             "and audio-visual sync shares as fractions, e.g. TaskMixer(stage1_steps=10000, "
                             "ramp_steps=5000, start_fraction=0.2, end_fraction=0.5)")

    def audio_fraction(self, batch_index: int) -> float:
        """The expected share of audio-visual sync samples in global batch ``batch_index``: 0 in stage 1,
        ``start_fraction`` at ``stage1_steps``, linear to ``end_fraction`` at ``stage1_steps + ramp_steps``,
        constant after."""
        k = int(batch_index)
        if k < self.stage1_steps:
            return 0.0
        t = 1.0 if self.ramp_steps == 0 else min(1.0, (k - self.stage1_steps) / self.ramp_steps)
        return float(self.start_fraction + (self.end_fraction - self.start_fraction) * t)

    def draw(self, seed: int, batch_index: int, rows: ArrayLike) -> np.ndarray:
        """``int32`` task ids (``TASK_SUBJECT`` / ``TASK_AUDIO``) of the global rows ``rows`` of global batch
        ``batch_index``. Row ``r`` gets ``TASK_AUDIO`` iff the ``r``-th uniform of the stream keyed by
        ``(seed, batch_index)`` is below ``audio_fraction(batch_index)``, so any subset of rows, on any host,
        agrees with the draw of the whole batch."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and (not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0)):
            raise ValueError(f"rows must be a 1-D array of non-negative row indices, got {rows!r}")
        if int(seed) < 0 or int(batch_index) < 0:
            raise ValueError(f"seed and batch_index must be >= 0, got seed {seed}, batch_index {batch_index}")
        p = self.audio_fraction(batch_index)
        if p == 0.0 or rows.size == 0:
            return np.full(rows.shape, TASK_SUBJECT, np.int32)
        # Doubles are drawn one 64-bit word each, so the first n uniforms do not depend on how many are drawn.
        u = np.random.default_rng([int(seed), int(batch_index), _STREAM]).random(int(rows.max()) + 1)
        return np.where(u[rows] < p, TASK_AUDIO, TASK_SUBJECT).astype(np.int32)
