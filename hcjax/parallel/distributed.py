"""Multi-host start-up: ``jax.distributed`` before any other JAX call of a pod run."""

from __future__ import annotations

import jax


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
