"""The record contract of a training dataset and its checks.

A record (one clip) is a dict of numpy arrays: ``latents [T, H, W, C]`` float32 (the VAE posterior mean times
the VAE scaling factor, channels last), ``text_states [L, text_dim]`` float32, ``text_mask [L]`` int32
(1 = real token), ``text_pooled [pooled_dim]`` float32, plus a ``caption`` string and any extra array keys the
``DataSpec`` declares. ``L`` is fixed per dataset. A batch stacks the array keys along a new leading axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

CONTRACT = ("latents", "text_states", "text_mask", "text_pooled")
REBUILD = ("precompute the dataset again with tools/precompute_dataset.py (or fix the source that made this "
           "record)")
Shape = tuple  # ints for fixed dims, names (str) or None for free ones


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What every record of a dataset holds; stored in the dataset's metadata.

    ``text_dtype`` is how ``text_states`` is stored on disk (read back as float32). ``extra`` declares optional
    array keys as ``(name, shape, dtype)`` with ``None`` for free dims and a name for a dim that must equal the
    same-named dim of every other key of the record (``latents`` is ``[T, H, W, C]``), e.g. ``("ref_latents",
    (None, "H", "W", 16), "float32")``: any number of frames at the latents' height and width."""

    latent_channels: int
    text_len: int
    text_dim: int
    pooled_dim: int
    scaling_factor: float = 1.0
    text_dtype: str = "float32"
    extra: tuple[tuple[str, tuple[int | None, ...], str], ...] = ()

    def __post_init__(self):
        if self.text_dtype not in ("float32", "float16"):
            raise ValueError(f"text_dtype {self.text_dtype!r}: use float32 or float16")
        object.__setattr__(self, "extra", tuple((str(k), tuple(s), str(d)) for k, s, d in self.extra))

    def arrays(self) -> dict[str, tuple[Shape, np.dtype]]:
        """Every array key with its shape pattern and in-memory dtype."""
        out = {"latents": (("T", "H", "W", self.latent_channels), np.dtype(np.float32)),
               "text_states": ((self.text_len, self.text_dim), np.dtype(np.float32)),
               "text_mask": ((self.text_len,), np.dtype(np.int32)),
               "text_pooled": ((self.pooled_dim,), np.dtype(np.float32))}
        out.update({k: (s, np.dtype(d)) for k, s, d in self.extra})
        return out

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["extra"] = [[k, list(s), t] for k, s, t in self.extra]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DataSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def for_model(cls, dit_cfg, text_len: int, **kw) -> "DataSpec":
        """The spec a DiT config trains on (latents of its ``out_channels``)."""
        return cls(dit_cfg.out_channels, text_len, dit_cfg.text_dim, dit_cfg.pooled_dim, **kw)


def _fmt(shape: Shape, bound: Mapping[str, int] | None = None) -> str:
    bound = bound or {}
    return "[" + ", ".join("?" if d is None else f"{d}={bound[d]}" if d in bound else str(d) for d in shape) + "]"


def _dims_fit(got: tuple, want: Shape, bound: dict[str, int]) -> bool:
    """Whether ``got`` fits the pattern ``want``; named dims are bound in ``bound`` at their first sight."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if isinstance(w, int) and g != w or isinstance(w, str) and bound.setdefault(w, g) != g:
            return False
    return True


def record_problems(record: Any, spec: DataSpec) -> list[str]:
    """Every way ``record`` breaks ``spec`` (missing keys, shapes, named dims that differ between keys, dtypes,
    non-finite latents)."""
    if not isinstance(record, Mapping):
        return [f"is a {type(record).__name__}, not a dict of arrays"]
    out, bound = [], {}
    for key, (shape, dtype) in spec.arrays().items():
        if key not in record:
            out.append(f"missing key {key!r}")
            continue
        x = record[key]
        if not isinstance(x, np.ndarray):
            out.append(f"{key} is a {type(x).__name__}, not a numpy array")
            continue
        before = dict(bound)
        if not _dims_fit(tuple(x.shape), shape, bound):
            out.append(f"{key} has shape {list(x.shape)}, needs {_fmt(shape, before)}")
        elif key == "latents" and not np.isfinite(x).all():
            out.append("latents hold NaN or inf")
        if x.dtype != dtype:
            out.append(f"{key} has dtype {x.dtype}, needs {dtype}")
    return out


def check_record(record: Any, spec: DataSpec, index: int, fix: str = REBUILD) -> dict:
    """``record`` itself if it meets ``spec``; else one ``ValueError`` naming the record index, keys and fix."""
    problems = record_problems(record, spec)
    if problems:
        raise ValueError(f"record {index}: {'; '.join(problems)}. Fix: {fix}")
    return record


def model_problems(spec: DataSpec, buckets, dit_cfg=None, text_len: int | None = None) -> list[str]:
    """Mismatches between a dataset (spec and latent buckets ``(T, H, W)``) and a model config / text length."""
    out = []
    if dit_cfg is not None:
        for name, have, want in (("latent channels", spec.latent_channels, dit_cfg.out_channels),
                                 ("text_dim", spec.text_dim, dit_cfg.text_dim),
                                 ("pooled_dim", spec.pooled_dim, dit_cfg.pooled_dim)):
            if have != want:
                out.append(f"{name} is {have}, the model needs {want}")
        patch = tuple(dit_cfg.patch_size)
        bad = [tuple(b) for b in buckets if any(n % p for n, p in zip(b, patch))]
        if bad:
            out.append(f"latent sizes {bad} are not multiples of the patch size {patch}")
    if text_len is not None and spec.text_len != text_len:
        out.append(f"text length is {spec.text_len}, expected {text_len}")
    return out
