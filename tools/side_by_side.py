"""Side-by-side timing of hcjax against a PyTorch reference, shared by the ``bench_*`` tools."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np


def first_runs(run_jax: Callable, run_torch: Callable) -> tuple[np.ndarray, np.ndarray, float]:
    """One run of each (the jax one includes compilation): ``(jax output, torch output, jax seconds)``."""
    t0 = time.perf_counter()
    out_jax = np.asarray(run_jax())
    compile_s = time.perf_counter() - t0
    return out_jax, np.asarray(run_torch()), compile_s


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    """Relative L2 error of ``got`` against ``want``."""
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def interleaved_times(runs: int, **fns: Callable) -> dict[str, list[float]]:
    """Runs each function ``runs`` times, alternating between them; seconds per run by name."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def report(times: dict[str, list[float]], ours: str = "hcjax", theirs: str = "diffusers") -> None:
    """Prints each median with its runs, then the ratio ``ours / theirs``."""
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ts in times.items():
        print(f"{name:9s} median {med[name] * 1e3:8.1f} ms  runs {[round(t * 1e3, 1) for t in ts]}")
    print(f"ratio {ours}/{theirs} = {med[ours] / med[theirs]:.3f}")
