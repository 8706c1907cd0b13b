"""The TFDS builder of precomputed training clips (ArrayRecord files, readable without tensorflow).

Records follow ``data_spec``: latents of any ``(T, H, W)``, text padded to the dataset's length, the caption.
Records are stored in the order given (``disable_shuffling``), so record ``i`` is the caller's ``i``-th example;
``metadata.json`` holds the ``DataSpec``, the latent buckets and their counts, and ``bucket_ids.npy`` the bucket
of every record, so readers group by shape without decoding latents. ``write_dataset`` builds into a hidden
sibling folder and renames it into place only when complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hcjax.training.data_source import BUCKET_FILE, FORMAT, NULL_TEXT_FILE, VERSION
from hcjax.training.data_spec import DataSpec, check_record, record_problems

TEXT_KEYS = ("text_states", "text_mask", "text_pooled")
FLOAT16_MAX = float(np.finfo(np.float16).max)


class ClipMetadata(tfds.core.MetadataDict):
    """The JSON metadata, plus ``bucket_ids`` written as ``bucket_ids.npy`` beside it and, when set, the empty
    prompt's embedding ``null_text`` as ``null_text.npz``."""

    bucket_ids: list[int]
    null_text: Mapping[str, np.ndarray] | None = None

    def save_metadata(self, data_dir):
        super().save_metadata(data_dir)
        folder = Path(os.fspath(data_dir))
        with (folder / BUCKET_FILE).open("wb") as f:
            np.save(f, np.asarray(getattr(self, "bucket_ids", []), np.int32))
        if self.null_text is not None:
            with (folder / NULL_TEXT_FILE).open("wb") as f:
                np.savez(f, **{k: self.null_text[k] for k in TEXT_KEYS})


class HcjaxClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes ``examples`` (dicts meeting ``spec``; text_states may be float32, stored as ``spec.text_dtype``)
    as one ``train`` split. ``metadata`` adds JSON-able facts (e.g. the source model) to ``metadata.json``;
    ``null_text`` (``text_states``, ``text_mask``, ``text_pooled`` of the empty prompt) is stored for text dropout."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "latents, text embeddings, caption; bucket index"}

    def __init__(self, *, spec: DataSpec, examples: Iterable[Mapping[str, Any]] = (),
                 metadata: Mapping[str, Any] | None = None, null_text: Mapping[str, np.ndarray] | None = None,
                 **kwargs):
        if null_text is not None:
            null_text = {k: null_text[k] for k in TEXT_KEYS if k in null_text}
            problems = [p for p in record_problems(null_text, dataclasses.replace(spec, extra=()))
                        if "latents" not in p]
            if problems:
                raise ValueError(f"null_text: {'; '.join(problems)}; give the empty prompt's embedding of the "
                                 "dataset's text length and widths")
        self._spec, self._examples, self._extra_meta, self._null = spec, examples, dict(metadata or {}), null_text
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """This file (TFDS's own lookup needs the ``importlib_resources`` backport for installed packages)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self._spec

        def tensor(shape, dtype):   # named dims (equal across keys) are free for TFDS
            shape = tuple(d if isinstance(d, int) else None for d in shape)
            return tfds.features.Tensor(shape=shape, dtype=np.dtype(dtype), encoding="bytes")

        features = {"latents": tensor((None, None, None, s.latent_channels), np.float32),
                    "text_states": tensor((s.text_len, s.text_dim), s.text_dtype),
                    "text_mask": tensor((s.text_len,), np.int32),
                    "text_pooled": tensor((s.pooled_dim,), np.float32),
                    "caption": tfds.features.Text()}
        features.update({k: tensor(shape, dtype) for k, shape, dtype in s.extra})
        meta = ClipMetadata(format=FORMAT, version=VERSION, spec=s.to_json(), **self._extra_meta)
        meta.null_text = self._null
        return tfds.core.DatasetInfo(builder=self, description="hcjax training clips: VAE latents (scaled), text "
                                     "embeddings, caption", features=tfds.features.FeaturesDict(features),
                                     metadata=meta, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        s, meta = self._spec, self.info.metadata
        buckets: dict[tuple, int] = {}
        ids = []
        for i, example in enumerate(self._examples):
            example = dict(example)
            caption = example.pop("caption", "")
            check_record(example, s, i, "fix the examples given to the builder")
            states = example["text_states"]
            if s.text_dtype == "float16" and np.abs(states).max(initial=0) > FLOAT16_MAX:
                raise ValueError(f"record {i}: text_states exceed the float16 range; store them as float32 "
                                 "(--text-dtype float32)")
            example["text_states"] = states.astype(s.text_dtype)
            ids.append(buckets.setdefault(tuple(example["latents"].shape[:3]), len(buckets)))
            yield i, example | {"caption": str(caption)}
        if not ids:
            raise ValueError("no examples to write; give at least one record")
        meta.bucket_ids = ids
        meta.update(buckets=[list(b) for b in buckets], bucket_counts=np.bincount(ids).tolist(), num_records=len(ids))


def write_dataset(path: str | os.PathLike, examples: Iterable[Mapping[str, Any]], spec: DataSpec,
                  metadata: Mapping[str, Any] | None = None, null_text: Mapping[str, np.ndarray] | None = None) -> Path:
    """Writes ``examples`` (and ``metadata``, ``null_text``: see ``HcjaxClips``) to the new folder ``path`` (read
    it with ``hcjax.training.data.open_dataset``). Nothing appears at ``path`` unless every example was written."""
    path = Path(path).absolute()
    if path.exists():
        raise FileExistsError(f"{path} exists already; choose a new output folder or delete it first")
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        builder = HcjaxClips(spec=spec, examples=examples, metadata=metadata, null_text=null_text,
                             data_dir=os.fspath(tmp), file_format="array_record")
        builder.download_and_prepare()
        os.rename(os.fspath(builder.data_dir), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
