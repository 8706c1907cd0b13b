"""Host-side progress of a compiled sampling loop, and wall-clock phase timings."""

from __future__ import annotations

import contextlib
import sys
import time


class StepProgress:
    """A progress bar over denoising steps, fed by ``jax.debug.callback`` from inside the compiled loop.

    The compiled program keeps a reference to ``self.update``; ``start`` / ``close`` bracket each run, so
    one compiled sampler serves many runs. Callbacks may arrive out of order: the bar shows the furthest step.
    """

    def __init__(self, enabled: bool = True, desc: str = "denoise", stream=None):
        self.enabled, self.desc, self.stream = enabled, desc, stream or sys.stderr
        self.bar, self.done = None, 0

    def start(self, total: int) -> None:
        self.done = 0
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", file=self.stream, leave=True)

    def update(self, step) -> None:
        step = int(step) + 1
        if step > self.done:
            if self.bar is not None:
                self.bar.update(step - self.done)
            self.done = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PhaseTimer:
    """``with timer("denoise"): ...`` accumulates seconds per phase, in order of first use."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def report(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())
        return f"{parts} (total {total:.2f} s)"
