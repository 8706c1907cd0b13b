"""Host-side training metrics: means over a logging window, the loss per noise-level bucket, throughput and
an MFU estimate (model FLOPs from ``hcjax.models.flops`` over the devices' dense bf16 peak)."""

from __future__ import annotations

import time

import jax
import numpy as np

# dense bf16 peak FLOP/s per JAX device (a TPU v4 / v5p chip is one device: its two cores run as one)
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
              "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100": 312e12}


def peak_flops(device: jax.Device | None = None) -> float | None:
    """Dense bf16 peak of ``device`` (default: the first one), or None if unknown (CPUs)."""
    kind = (device or jax.devices()[0]).device_kind
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if kind.startswith(name):
            return PEAK_FLOPS[name]
    return None


# the metrics every train step returns (``training.step``); any other scalar is an auxiliary loss's
STEP_METRICS = ("loss", "grad_norm", "bucket_loss_sum", "bucket_count")


class MetricsWindow:
    """Accumulates step metrics between two reports."""

    def __init__(self, step_flops: float | None, samples_per_step: int, tokens_per_sample: int):
        self.step_flops, self.samples, self.tokens = step_flops, samples_per_step, tokens_per_sample
        self.peak = peak_flops()
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.start, self.steps, self.loss, self.grad_norm = now, 0, 0.0, 0.0
        self.bucket_sum = self.bucket_count = None
        self.extra: dict[str, float] = {}     # other scalar metrics of the step (an auxiliary loss's)

    def add(self, metrics: dict) -> None:
        m = jax.device_get(metrics)
        self.steps += 1
        self.loss += float(m["loss"])
        self.grad_norm += float(m["grad_norm"])
        if "bucket_loss_sum" in m:   # the flow-matching step's (the VAE step has none)
            s, c = np.asarray(m["bucket_loss_sum"]), np.asarray(m["bucket_count"])
            self.bucket_sum = s if self.bucket_sum is None else self.bucket_sum + s
            self.bucket_count = c if self.bucket_count is None else self.bucket_count + c
        for k, v in m.items():
            if k not in STEP_METRICS and np.ndim(v) == 0:
                self.extra[k] = self.extra.get(k, 0.0) + float(v)

    def report(self) -> dict:
        """Means since the last report (the window then restarts)."""
        now = time.perf_counter()
        seconds, n = max(now - self.start, 1e-9), max(self.steps, 1)
        out = {"loss": self.loss / n, "grad_norm": self.grad_norm / n, "steps_per_s": self.steps / seconds,
               "samples_per_s": self.steps * self.samples / seconds,
               "tokens_per_s": self.steps * self.samples * self.tokens / seconds}
        out.update({k: v / n for k, v in self.extra.items()})
        if self.bucket_sum is not None:
            buckets = len(self.bucket_sum)
            for i, (s, c) in enumerate(zip(self.bucket_sum, self.bucket_count)):
                if c > 0:
                    out[f"loss_sigma_{i / buckets:.2f}-{(i + 1) / buckets:.2f}"] = float(s / c)
        if self.step_flops is not None:   # None: a step without a FLOP count (the VAE's)
            achieved = self.steps * self.step_flops / seconds / jax.device_count()
            out["tflops_per_device"] = achieved / 1e12
            if self.peak:
                out["mfu"] = achieved / self.peak
        self._reset(now)
        return out
