"""The training input pipeline (Grain): bucketed, sharded, shuffled, repeated and exactly resumable.

Global batch ``k`` is planned from ``(seed, epoch)`` alone: each epoch shuffles the records of every latent
bucket, cuts them into global batches of one bucket (remainders dropped), then shuffles the batch order.
Host ``p`` of ``P`` reads rows ``p * B / P .. (p + 1) * B / P`` of each global batch, so all hosts step
through the same bucket together and their shares are disjoint. The iterator's state is just the next global
batch number (plus a fingerprint of the plan), so a restored iterator yields exactly the same batches, on any
number of hosts that divides the global batch.

With ``task_mixer`` (a ``TaskMixer``, HuMo's progressive task mix) each batch also gets ``task [b] int32``: the
tasks of this host's rows, drawn from ``(seed, k)`` and the global row indices alone, so hosts agree, the
iterator state is unchanged and a resume is exact.

    source = open_dataset("data/clips")          # or SyntheticSource.for_model(cfg.dit)
    check_dataset(source, cfg.dit)
    it = make_iterator(source, global_batch=32, seed=0)
    batch = next(it)                             # latents [B, T, H, W, C], text_states [B, L, D], ...
    state = it.get_state()                       # JSON; it.set_state(state) on a fresh iterator resumes
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from hcjax.training.data_source import (ClipSource, InMemorySource, TfdsSource, check_dataset, open_dataset,
                                        read_metadata)
from hcjax.training.data_spec import CONTRACT, DataSpec, check_record, record_problems
from hcjax.training.data_synthetic import SyntheticSource
from hcjax.training.task_mixer import TaskMixer

__all__ = ["CONTRACT", "BatchPlan", "ClipSource", "DataIterator", "DataSpec", "InMemorySource", "SyntheticSource",
           "TaskMixer", "TfdsSource", "check_dataset", "check_record", "make_dataset", "make_iterator", "open_dataset",
           "read_metadata", "record_problems"]
STATE_FORMAT = "hcjax-data-iterator"


class BatchPlan:
    """Which records form global batch ``k`` (see module doc); depends only on the bucket ids, the global batch,
    the seed and ``shuffle`` (False: records in order within buckets, buckets in order)."""

    def __init__(self, bucket_ids: np.ndarray, global_batch: int, seed: int, shuffle: bool = True):
        self.bucket_ids = np.asarray(bucket_ids, np.int64)
        self.global_batch, self.seed, self.shuffle = int(global_batch), int(seed), bool(shuffle)
        if self.global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        self._members = [np.flatnonzero(self.bucket_ids == b) for b in range(int(self.bucket_ids.max(initial=-1)) + 1)]
        self.batches_per_epoch = sum(len(m) // self.global_batch for m in self._members)
        if self.batches_per_epoch == 0:
            largest = max((len(m) for m in self._members), default=0)
            raise ValueError(f"no latent bucket holds a global batch of {global_batch} records (largest bucket: "
                             f"{largest}); lower global_batch or add clips of one shape")
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def epoch(self, e: int) -> np.ndarray:
        """``[batches_per_epoch, global_batch]`` record indices of epoch ``e``."""
        with self._lock:
            if e not in self._cache:
                rng = np.random.default_rng([self.seed, e]) if self.shuffle else None
                rows = []
                for m in self._members:
                    m = rng.permutation(m) if rng is not None else m
                    n = len(m) // self.global_batch * self.global_batch
                    rows.append(m[:n].reshape(-1, self.global_batch))
                plan = np.concatenate(rows)
                self._cache = {k: v for k, v in self._cache.items() if k == e - 1}   # prefetch may straddle epochs
                self._cache[e] = plan[rng.permutation(len(plan))] if rng is not None else plan
            return self._cache[e]

    def indices(self, k: int) -> np.ndarray:
        """Record indices of global batch ``k`` (counting over all epochs)."""
        e, j = divmod(int(k), self.batches_per_epoch)
        return self.epoch(e)[j]

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.bucket_ids.astype("<i8").tobytes())
        h.update(json.dumps([self.global_batch, self.seed, self.shuffle]).encode())
        return h.hexdigest()[:16]


def _hosts(global_batch: int, process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count or global_batch % process_count:
        raise ValueError(f"host {process_index} of {process_count}: the global batch {global_batch} must split "
                         "evenly over the hosts (use a multiple of the process count)")
    return process_index, process_count


def stack_records(records: list[dict], indices) -> dict[str, np.ndarray]:
    """The array keys of ``records`` stacked on a new leading axis (strings such as ``caption`` dropped)."""
    keys = [k for k, v in records[0].items() if isinstance(v, np.ndarray)]
    out = {}
    for key in keys:
        try:
            out[key] = np.stack([r[key] for r in records])
        except (KeyError, ValueError) as e:
            shapes = {int(i): getattr(r.get(key), "shape", None) for i, r in zip(indices, records)}
            raise ValueError(f"records {list(shapes)} cannot be batched on {key!r} ({e}; shapes {shapes}); give "
                             "every record of a bucket the same keys and shapes") from None
    return out


def make_dataset(source: ClipSource, *, global_batch: int, seed: int, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool = True,
                 num_epochs: int | None = None,
                 task_mixer: TaskMixer | None = None) -> tuple[grain.MapDataset, BatchPlan]:
    """``(dataset, plan)``: a Grain ``MapDataset`` whose element ``k`` is this host's share of global batch ``k``
    (``global_batch / process_count`` records of one bucket, each checked against ``source.spec``), endless
    unless ``num_epochs`` is given. Process index and count default to JAX's. ``task_mixer`` adds ``task [b]
    int32`` (see module doc)."""
    index, count = _hosts(global_batch, process_index, process_count)
    plan = BatchPlan(source.bucket_ids, global_batch, seed, shuffle)
    per_host = global_batch // count
    rows = slice(index * per_host, (index + 1) * per_host)

    def load(k: int) -> dict[str, np.ndarray]:
        ids = plan.indices(k)[rows]
        batch = stack_records([source.checked(int(i)) for i in ids], ids)
        if task_mixer is not None:
            if "task" in batch:
                raise ValueError("the records already hold a 'task' key; drop it or make the iterator without "
                                 "task_mixer")
            batch["task"] = task_mixer.draw(plan.seed, k, np.arange(rows.start, rows.stop))
        return batch

    length = plan.batches_per_epoch * num_epochs if num_epochs is not None else sys.maxsize
    return grain.MapDataset.range(length).map(load), plan


class DataIterator(Iterator[dict]):
    """Batches (dicts of numpy arrays) with a JSON ``get_state`` / ``set_state`` that resume exactly."""

    def __init__(self, dataset: grain.MapDataset, plan: BatchPlan, read_options: grain.ReadOptions):
        self.plan = plan
        self._it = dataset.to_iter_dataset(read_options).__iter__()

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def close(self) -> None:
        """Stops the read-ahead threads."""
        self._it.close()

    @property
    def step(self) -> int:
        """Global batches returned so far (the next batch's number)."""
        return int(self._it.get_state()["next_index"])

    @property
    def epoch(self) -> int:
        return self.step // self.plan.batches_per_epoch

    def get_state(self) -> dict[str, Any]:
        p = self.plan
        return {"format": STATE_FORMAT, "next_batch": self.step, "seed": p.seed, "global_batch": p.global_batch,
                "shuffle": p.shuffle, "num_records": int(len(p.bucket_ids)), "fingerprint": p.fingerprint()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues after the batches ``state`` was taken after (same records, seed and global batch)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a data iterator state (format {STATE_FORMAT!r}): {str(state)[:200]}")
        mine = self.get_state()
        diff = [f"{k} {state.get(k)!r} (now {mine[k]!r})" for k in ("seed", "global_batch", "shuffle",
                                                                    "num_records", "fingerprint")
                if state.get(k) != mine[k]]
        if diff:
            raise ValueError("the data iterator state was saved with another dataset or plan: " + ", ".join(diff)
                             + ". Resume with the same dataset, seed and global batch, or start the data afresh")
        self._it.set_state({"next_index": int(state["next_batch"])})


def make_iterator(source: ClipSource, *, global_batch: int, seed: int, process_index: int | None = None,
                  process_count: int | None = None, shuffle: bool = True, num_epochs: int | None = None,
                  num_threads: int = 2, prefetch: int = 2, task_mixer: TaskMixer | None = None) -> DataIterator:
    """This host's batches of ``source`` (see module doc): dicts with ``latents [b, T, H, W, C]``,
    ``text_states [b, L, D]``, ``text_mask [b, L]``, ``text_pooled [b, P]`` (and any extra array keys),
    ``b = global_batch / process_count``. ``num_threads`` batches are read ahead in threads, at most ``prefetch``
    buffered (0 reads in the calling thread). With ``task_mixer`` batches also hold ``task [b] int32``."""
    dataset, plan = make_dataset(source, global_batch=global_batch, seed=seed, process_index=process_index,
                                 process_count=process_count, shuffle=shuffle, num_epochs=num_epochs,
                                 task_mixer=task_mixer)
    return DataIterator(dataset, plan, grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
