"""The procedural world as a training source of pixel clips (``hcjax train`` of the demo VAE).

Record ``i`` is a crop of train scene ``i`` of ``world.scenes("train", n, seed)``: ``frames`` consecutive frames
(a 4k+1 count, starting at a frame drawn from ``(seed, i)``) and a ``size`` x ``size`` window around the subject's
centre at the middle frame, shifted by up to a quarter of the window, as ``video [F, S, S, 3]`` uint8: crops show
the subject and its edges rather than mostly flat background. Rendering is deterministic, so the Grain pipeline's
batches and its resumable state work as for a dataset on disk.
"""

from __future__ import annotations

import numpy as np

from hcjax.demo import world
from hcjax.training.data_source import ClipSource
from hcjax.training.data_spec import DataSpec


class ProceduralClips(ClipSource):
    """``n`` pixel clips of the demo world; ``checked(i)`` renders record ``i``."""

    def __init__(self, n: int, frames: int = 5, size: int = 64, seed: int = 0):
        if n < 1 or (frames - 1) % 4 or not 1 <= frames <= world.FRAMES or not 8 <= size <= world.SIZE:
            raise ValueError(f"procedural clips: need n >= 1, frames 4k+1 up to {world.FRAMES} and size 8.."
                             f"{world.SIZE}; got n {n}, frames {frames}, size {size}")
        self.scenes = world.scenes("train", n, seed)
        self.frames, self.size, self.seed = frames, size, seed
        self.name = f"procedural clips ({n} scenes, seed {seed})"
        self.spec = DataSpec(latent_channels=3, text_len=1, text_dim=1, pooled_dim=1)
        self.buckets = ((frames, size, size),)
        self.bucket_ids = np.zeros((n,), np.int32)

    def __getitem__(self, index: int) -> dict:
        return self.checked(index)

    def checked(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index), 7])
        start = int(rng.integers(0, world.FRAMES - self.frames + 1))
        centre = world.centre_at(self.scenes[index], start + self.frames // 2)
        jitter = rng.uniform(-self.size / 4, self.size / 4, size=2)
        y, x = (int(np.clip(round(c + j - self.size / 2), 0, world.SIZE - self.size)) for c, j in zip(centre, jitter))
        video = world.render_video(self.scenes[index], range(start, start + self.frames))
        return {"video": video[:, y:y + self.size, x:x + self.size]}
