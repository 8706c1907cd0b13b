"""Random-access sources of training records: a precomputed TFDS ArrayRecord dataset, or records in memory.

Every source knows its ``DataSpec`` and the latent bucket ``(T, H, W)`` of every record without reading it
(``buckets`` and ``bucket_ids``), so the pipeline can group records by shape cheaply. A precomputed dataset
keeps the ids in ``bucket_ids.npy`` beside its ``metadata.json`` (written by ``tfds_builder``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hcjax.training.data_spec import REBUILD, DataSpec, check_record, model_problems

FORMAT, VERSION = "hcjax-clips", 1
METADATA_FILE, BUCKET_FILE, NULL_TEXT_FILE = "metadata.json", "bucket_ids.npy", "null_text.npz"
Bucket = tuple[int, int, int]


class ClipSource:
    """Records ``0 .. len - 1`` of one dataset, their ``spec``, ``buckets`` (distinct latent ``(T, H, W)``) and
    ``bucket_ids`` (``[N]`` int32 index into ``buckets``). Subclasses set these and define ``__getitem__``."""

    spec: DataSpec
    buckets: tuple[Bucket, ...]
    bucket_ids: np.ndarray
    name: str = "source"
    fix: str = REBUILD

    def __len__(self) -> int:
        return len(self.bucket_ids)

    def __getitem__(self, index: int) -> dict:
        raise NotImplementedError

    def checked(self, index: int) -> dict:
        """Record ``index``, checked against the spec and its bucket (``ValueError`` naming index and fix)."""
        record = check_record(self[index], self.spec, index, self.fix)
        want = self.buckets[self.bucket_ids[index]]
        if tuple(record["latents"].shape[:3]) != want:
            raise ValueError(f"record {index}: latents are {list(record['latents'].shape[:3])} (T, H, W) but the "
                             f"bucket index says {list(want)}; the index is stale. Fix: {self.fix}")
        return record


def group_shapes(shapes: Sequence[Bucket]) -> tuple[tuple[Bucket, ...], np.ndarray]:
    """``(buckets, bucket_ids)`` of per-record latent shapes, buckets sorted."""
    buckets = tuple(sorted(set(tuple(int(n) for n in s) for s in shapes)))
    lookup = {b: i for i, b in enumerate(buckets)}
    return buckets, np.asarray([lookup[tuple(int(n) for n in s)] for s in shapes], np.int32).reshape(-1)


class InMemorySource(ClipSource):
    """A list of records (small datasets and tests); buckets from each record's latents."""

    def __init__(self, records: Sequence[Mapping[str, Any]], spec: DataSpec, name: str = "in-memory records"):
        shapes = []
        for i, r in enumerate(records):
            lat = r.get("latents") if isinstance(r, Mapping) else None
            if getattr(lat, "ndim", 0) != 4:
                raise ValueError(f"record {i}: needs latents [T, H, W, C], got "
                                 f"{None if lat is None else getattr(lat, 'shape', type(lat).__name__)}")
            shapes.append(lat.shape[:3])
        self.records, self.spec, self.name = list(records), spec, name
        self.buckets, self.bucket_ids = group_shapes(shapes)

    def __getitem__(self, index: int) -> dict:
        return dict(self.records[index])


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a precomputed dataset: ``spec`` (a ``DataSpec``), ``buckets``, ``bucket_counts``,
    ``num_records`` and whatever else the writer stored (e.g. ``source``)."""
    file = Path(path) / METADATA_FILE
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a dataset written by tools/precompute_dataset.py ({METADATA_FILE}: "
                         f"{e}); give the folder that tool wrote") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{file} is not {FORMAT!r} metadata; give a folder written by tools/precompute_dataset.py")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path}: dataset version {meta['version']} is newer than this hcjax reads ({VERSION}); "
                         "update hcjax")
    meta["spec"] = DataSpec.from_json(meta["spec"])
    meta["buckets"] = [tuple(b) for b in meta["buckets"]]
    return meta


class TfdsSource(ClipSource):
    """A dataset written by ``tfds_builder.write_dataset`` (ArrayRecord files; tensorflow not needed). When the
    dataset stores the empty prompt's embedding, ``null_text()`` returns it (``text_states``, ``text_mask``,
    ``text_pooled``); otherwise the source has no ``null_text`` attribute."""

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        import tensorflow_datasets as tfds

        meta = read_metadata(path)
        self.path, self.name, self.spec, self.metadata = Path(path), f"dataset {path}", meta["spec"], meta
        self.buckets = tuple(meta["buckets"])
        try:
            self._data = tfds.builder_from_directory(os.fspath(path)).as_data_source(split=split)
        except Exception as e:  # noqa: BLE001 - TFDS raises many kinds on damaged folders
            raise ValueError(f"{path}: cannot open split {split!r} ({type(e).__name__}: {e}); {REBUILD}") from None
        if (self.path / NULL_TEXT_FILE).is_file():
            self.null_text = self._null_text
        ids_file = self.path / BUCKET_FILE
        self.bucket_ids = (np.load(ids_file) if ids_file.is_file() else self._scan()).astype(np.int32)
        if len(self.bucket_ids) != len(self._data) or (len(self.bucket_ids) and
                                                       self.bucket_ids.max() >= len(self.buckets)):
            raise ValueError(f"{path}: the bucket index ({len(self.bucket_ids)} entries) does not match the "
                             f"{len(self._data)} records; {REBUILD}")

    def _null_text(self) -> dict[str, np.ndarray]:
        with np.load(self.path / NULL_TEXT_FILE, allow_pickle=False) as f:
            return {k: f[k] for k in ("text_states", "text_mask", "text_pooled")}

    def _scan(self) -> np.ndarray:
        """Bucket ids by reading every record (datasets without ``bucket_ids.npy``)."""
        lookup = {b: i for i, b in enumerate(self.buckets)}
        try:
            return np.asarray([lookup[tuple(self._data[i]["latents"].shape[:3])] for i in range(len(self._data))])
        except KeyError as e:
            raise ValueError(f"{self.path}: a record's latent shape {e} is not among the metadata's buckets; "
                             f"{REBUILD}") from None

    def __getitem__(self, index: int) -> dict:
        record = dict(self._data[int(index)])
        if "text_states" in record:
            record["text_states"] = np.asarray(record["text_states"], np.float32)
        if isinstance(record.get("caption"), bytes):
            record["caption"] = record["caption"].decode("utf-8")
        return record


def open_dataset(path: str | os.PathLike, split: str = "train") -> TfdsSource:
    """The precomputed dataset at ``path`` (the folder ``tools/precompute_dataset.py --out`` wrote)."""
    return TfdsSource(path, split)


def check_dataset(source: ClipSource, dit_cfg=None, *, text_len: int | None = None, num_records: int = 4) -> None:
    """Cheap checks before training: the source's spec and buckets against the model config (``out_channels``,
    ``text_dim``, ``pooled_dim``, ``patch_size``) and text length, then its first ``num_records`` records.
    Raises one ``ValueError`` naming what differs and the fix."""
    problems = model_problems(source.spec, source.buckets, dit_cfg, text_len)
    if len(source) == 0:
        problems.append("it holds no records")
    if problems:
        raise ValueError(f"{source.name} does not fit the model: {'; '.join(problems)}. Fix: precompute the "
                         "dataset with this model's VAE and text encoders (tools/precompute_dataset.py), or "
                         "train the model it was made for")
    for i in range(min(num_records, len(source))):
        source.checked(i)
