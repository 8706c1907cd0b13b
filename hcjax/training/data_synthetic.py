"""A synthetic, learnable source for benchmarks and tests, deterministic from a seed.

``num_clips`` fixed clips, each a smooth random latent (a few low-frequency plane waves per channel, unit
variance) paired with its own fixed text embedding; record ``i`` is clip ``i % num_clips``. A model trained with
flow matching can learn the text -> clip map, so its loss falls well below that of noise.

Clips can also carry the HunyuanCustom and Avatar conditions (``extra`` keys, ``hcjax.training.custom_cond``,
``hcjax.training.avatar_cond``), each a simple function of the clip's latents that a model can learn to use:
``ref_latents`` its first latent frame (the identity image taken from the clip), ``bg_latents`` the latents with a
random box zeroed ++ the box as a ``+-1`` mask, ``audio_feats`` per video frame a fixed random linear map of its
latent frame's channel means, ``face_mask`` a random box of ones (zeros outside), ``emotion_latents`` its last
latent frame (the expression the clip reaches), ``first_latents`` its first latent frame (the I2V image).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hcjax.conditioning.audio import video_frames
from hcjax.training.data_source import Bucket, ClipSource, group_shapes
from hcjax.training.data_spec import DataSpec


def smooth_latents(rng: np.random.Generator, shape: Bucket, channels: int, waves: int = 4) -> np.ndarray:
    """``[T, H, W, channels]`` float32: a sum of ``waves`` random cosines per channel (at most one period along
    each axis), unit std."""
    t, h, w = shape
    grid = np.meshgrid(np.arange(t) / max(t, 2), np.arange(h) / h, np.arange(w) / w, indexing="ij")
    x = np.zeros((t, h, w, channels), np.float64)
    for _ in range(waves):
        freq = rng.uniform(0, 1, size=(3, channels))
        phase = rng.uniform(0, 2 * np.pi, channels)
        arg = sum(g[..., None] * f for g, f in zip(grid, freq))
        x += rng.standard_normal(channels) * np.cos(2 * np.pi * arg + phase)
    x = (x - x.mean()) / max(x.std(), 1e-6)
    return x.astype(np.float32)


def reference_latents(rng: np.random.Generator, latents: np.ndarray, shape: tuple) -> np.ndarray:
    """``[n, H, W, C]``: the clip's first latent frame for each of ``n`` subjects (1 when free)."""
    return np.repeat(latents[:1], shape[0] or 1, axis=0)


def background_latents(rng: np.random.Generator, latents: np.ndarray, shape: tuple) -> np.ndarray:
    """``[T, H, W, 2C]``: the latents with a random box of half the height and width zeroed, ++ the box as a
    mask (+1 inside, -1 outside) in every channel."""
    t, h, w, c = latents.shape
    bh, bw = max(1, h // 2), max(1, w // 2)
    top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    inside = np.zeros((1, h, w, 1), bool)
    inside[:, top:top + bh, left:left + bw] = True
    mask = np.broadcast_to(np.where(inside, 1.0, -1.0), latents.shape)
    return np.concatenate([np.where(inside, 0.0, latents), mask], axis=-1).astype(np.float32)


def audio_windows(rng: np.random.Generator, latents: np.ndarray, shape: tuple) -> np.ndarray:
    """``[4 (T - 1) + 1, window, layers, c]``: video frame ``f``'s window is a fixed random linear map (the same
    for every clip) of the channel means of latent frame ``ceil(f / 4)``, scaled to unit std. For a pattern
    ``["T", ...]`` (HuMo's windows per latent frame) one window per latent frame, the same map."""
    frames_dim, window, layers, c = shape
    proj = np.random.default_rng(1234).standard_normal((latents.shape[-1], window * layers * c))
    frames = (np.arange(latents.shape[0]) if frames_dim == "T"
              else (np.arange(video_frames(latents.shape[0])) + 3) // 4)
    feats = latents.mean(axis=(1, 2))[frames] @ proj
    return (feats / max(feats.std(), 1e-6)).reshape(-1, window, layers, c).astype(np.float32)


def face_box(rng: np.random.Generator, latents: np.ndarray, shape: tuple) -> np.ndarray:
    """``[1, H, W]``: ones in a random box of half the height and width, zeros elsewhere."""
    _, h, w, _ = latents.shape
    bh, bw = max(1, h // 2), max(1, w // 2)
    top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    mask = np.zeros((1, h, w), np.float32)
    mask[:, top:top + bh, left:left + bw] = 1.0
    return mask


def last_frame(rng: np.random.Generator, latents: np.ndarray, shape: tuple) -> np.ndarray:
    """``[1, H, W, C]``: the clip's last latent frame."""
    return np.ascontiguousarray(latents[-1:])


CONDITIONS: dict[str, Callable[[np.random.Generator, np.ndarray, tuple], np.ndarray]] = {
    "ref_latents": reference_latents, "bg_latents": background_latents, "audio_feats": audio_windows,
    "face_mask": face_box, "emotion_latents": last_frame, "first_latents": reference_latents}


class SyntheticSource(ClipSource):
    """``num_records`` records of ``num_clips`` clips; clip ``k`` has latent shape ``latent_shapes[k % S]``
    (``(T, H, W)``), so there are ``min(num_clips, S)`` buckets. ``extra``: condition keys to add (``DataSpec``
    entries named in ``CONDITIONS``)."""

    def __init__(self, num_records: int = 256, *, latent_shapes: Sequence[Bucket] = ((3, 8, 12),),
                 latent_channels: int = 16, text_len: int = 16, text_dim: int = 32, pooled_dim: int = 16,
                 num_clips: int = 4, extra: Sequence[tuple] = (), seed: int = 0):
        if num_records < 1 or num_clips < 1 or not latent_shapes:
            raise ValueError(f"need num_records >= 1, num_clips >= 1 and a latent shape; got {num_records}, "
                             f"{num_clips}, {latent_shapes}")
        unknown = [e[0] for e in extra if e[0] not in CONDITIONS]
        if unknown:
            raise ValueError(f"synthetic data cannot make {unknown}; it makes {sorted(CONDITIONS)}")
        self.spec = DataSpec(latent_channels, text_len, text_dim, pooled_dim, extra=tuple(extra))
        self.name = f"synthetic source (seed {seed})"
        shapes = [tuple(latent_shapes[k % len(latent_shapes)]) for k in range(num_clips)]
        rng = np.random.default_rng(seed)
        self._clips = [self._clip(rng, k, s) for k, s in enumerate(shapes)]
        self.buckets, self.bucket_ids = group_shapes([shapes[i % num_clips] for i in range(num_records)])

    def _clip(self, rng: np.random.Generator, k: int, shape: Bucket) -> dict:
        s = self.spec
        valid = int(rng.integers(1, s.text_len + 1))
        mask = (np.arange(s.text_len) < valid).astype(np.int32)
        states = rng.standard_normal((s.text_len, s.text_dim)).astype(np.float32)
        clip = {"latents": smooth_latents(rng, shape, s.latent_channels),
                "text_states": states * mask[:, None].astype(np.float32),
                "text_mask": mask,
                "text_pooled": rng.standard_normal(s.pooled_dim).astype(np.float32)}
        for name, pattern, _ in s.extra:
            clip[name] = CONDITIONS[name](rng, clip["latents"], pattern)
        for x in clip.values():
            x.flags.writeable = False
        return clip | {"caption": f"synthetic clip {k}"}

    @classmethod
    def for_model(cls, dit_cfg, num_records: int = 256, **kw) -> "SyntheticSource":
        """Records a DiT config trains on (its ``out_channels``, ``text_dim``, ``pooled_dim``, and the condition
        keys its mechanisms read)."""
        from hcjax.training.cond_inputs import record_extras

        return cls(num_records, latent_channels=dit_cfg.out_channels, text_dim=dit_cfg.text_dim,
                   pooled_dim=dit_cfg.pooled_dim, extra=record_extras(dit_cfg), **kw)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        return dict(self._clips[index % len(self._clips)])
