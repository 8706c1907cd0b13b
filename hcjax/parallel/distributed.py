"""Multi-host start-up (``jax.distributed`` before any other JAX call of a pod run) and the few collective helpers
that shared writes need: the primary process, a barrier, a token common to all processes."""

from __future__ import annotations

import uuid

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> tuple[int, int]:
    """Joins this process to a multi-host run and returns ``(process_index, process_count)``.

    On Cloud TPU pods and SLURM / Open MPI clusters every argument is detected from the environment; elsewhere
    give all three. Must run before anything touches a device; a second call is a no-op."""
    given = [coordinator_address, num_processes, process_id]
    if any(x is not None for x in given) and any(x is None for x in given):
        raise ValueError("give coordinator_address, num_processes and process_id together (or none of them, "
                         "to detect them on a TPU pod or a SLURM / MPI cluster)")
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def initialize_from_config(train) -> tuple[int, int]:
    """``initialize`` with the experiment config's ``train.coordinator`` / ``num_processes`` / ``process_id``
    (``""``, ``0``, ``-1``: detect them)."""
    given = (train.coordinator, train.num_processes, train.process_id)
    if given == ("", 0, -1):
        return initialize()
    if not train.coordinator or train.num_processes < 1 or not 0 <= train.process_id < train.num_processes:
        raise ValueError(f"train.coordinator {train.coordinator!r}, train.num_processes {train.num_processes}, "
                         f"train.process_id {train.process_id}: give all three (HOST:PORT of process 0, the process "
                         "count, and 0 <= process_id < count), or none of them to detect them on a TPU pod or a "
                         "SLURM / MPI cluster")
    return initialize(train.coordinator, train.num_processes, train.process_id)


def is_primary() -> bool:
    """Whether this is process 0, the one that writes shared files of a multi-host run."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier of all processes (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def shared_token() -> str:
    """A random 8-hex-digit token, the same on every process (process 0's), for names all processes write into."""
    token = uuid.uuid4().hex[:8]
    if jax.process_count() == 1:
        return token
    from jax.experimental import multihost_utils

    raw = multihost_utils.broadcast_one_to_all(np.frombuffer(token.encode(), np.uint8))
    return bytes(np.asarray(raw, np.uint8)).decode()
