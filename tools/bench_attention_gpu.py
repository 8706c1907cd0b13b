"""Attention kernels on one GPU: hcjax's Pallas flash attention vs cuDNN, XLA and PyTorch's flash SDPA.

HunyuanVideo's attention: batch 1, 24 heads x head dim 128, bf16. Default lengths 8192 (quick check), 32768
and 119040 (720p x 129 frames). Times the forward at every length and forward + backward up to
``--backward-max`` tokens; prints the median of ``--repeats`` timed runs (after warm-up) as ms and TFLOP/s
(forward 4 B H L^2 D FLOPs, backward 2.5x that), then the speed ratios pallas / cudnn and best jax / torch
(> 1: the first is faster).

Rows: ``pallas`` (no mask, as the others), ``pallas+seg`` (the DiT's two contiguous segments, the last
``--pad-tokens`` tokens being padded text), ``cudnn`` (``jax.nn.dot_product_attention``, [B, L, H, D]),
``xla`` (``hcjax.nn.attention.xla_attention``, unchunked; skipped when its logits would not fit), ``torch``
(``scaled_dot_product_attention`` with the flash backend; skipped without a CUDA PyTorch).
``--sweep`` times a few block / warp / stage settings of the Pallas kernels at the first length.

    python tools/bench_attention_gpu.py [--lengths 8192 32768 119040] [--repeats 10] [--block-q 128]
        [--block-k 64] [--block-bwd 128 32] [--num-warps N] [--num-stages 2] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for PyTorch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

BATCH, HEADS, HEAD_DIM = 1, 24, 128


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 119040])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backward-max", type=int, default=32768, help="time forward+backward up to this length")
    p.add_argument("--block-q", type=int, default=128)
    p.add_argument("--block-k", type=int, default=64)
    p.add_argument("--block-bwd", type=int, nargs=2, default=[128, 32], metavar=("OUTER", "INNER"))
    p.add_argument("--num-warps", type=int, default=None)
    p.add_argument("--num-stages", type=int, default=2)
    p.add_argument("--pad-tokens", type=int, default=150, help="padded-text tokens of the pallas+seg row")
    p.add_argument("--sweep", action="store_true", help="time Pallas block settings at the first length")
    return p.parse_args()


def require_gpu() -> None:
    """Exits with a message (no traceback) when JAX sees no GPU."""
    try:
        jax.devices("gpu")
    except RuntimeError:
        sys.exit(f"bench_attention_gpu: no GPU visible to JAX (backend {jax.default_backend()!r}); "
                 "run it on a machine with an NVIDIA GPU and jax[cuda].")


def median_seconds(fn: Callable, sync: Callable, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` after ``warmup`` calls, each call synchronised by ``sync(result)``."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(length: int, backward: bool) -> float:
    forward = 4.0 * BATCH * HEADS * length**2 * HEAD_DIM
    return forward * (3.5 if backward else 1.0)


# ---------------------------------------------------------------------------------------------- jax


def jax_inputs(length: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """Head-major bf16 q, k, v and an output cotangent ``[B, H, L, D]``."""
    keys = jax.random.split(jax.random.key(seed), 4)
    return tuple(jax.random.normal(k, (BATCH, HEADS, length, HEAD_DIM), jnp.bfloat16) for k in keys)


def jax_step(attend: Callable, backward: bool) -> Callable:
    """Jitted ``(q, k, v, do) -> out`` or ``-> (out, dq, dk, dv)``."""
    if not backward:
        return jax.jit(lambda q, k, v, do: attend(q, k, v))

    def step(q, k, v, do):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, *vjp(do)

    return jax.jit(step)


def pallas_attend(args: argparse.Namespace, segment_ids=None, **overrides) -> Callable:
    from hcjax.nn.kernels.flash_gpu import flash_attention_gpu

    kw = dict(block_q=args.block_q, block_k=args.block_k, block_bwd=tuple(args.block_bwd),
              num_warps=args.num_warps, num_stages=args.num_stages) | overrides
    return lambda q, k, v: flash_attention_gpu(q, k, v, segment_ids, **kw)


def cudnn_attend(q, k, v):
    """cuDNN on [B, L, H, D] (the inputs are given in that layout)."""
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def xla_fits(length: int, backward: bool) -> bool:
    """Whether the unchunked XLA path's fp32 logits (a few live copies) fit the device memory."""
    stats = jax.devices("gpu")[0].memory_stats() or {}
    limit = stats.get("bytes_limit", 80 * 2**30)
    return (5 if backward else 3) * BATCH * HEADS * length**2 * 4 < limit


def time_jax(attend: Callable, inputs: tuple, backward: bool, args: argparse.Namespace) -> float:
    step = jax_step(attend, backward)
    return median_seconds(lambda: step(*inputs), jax.block_until_ready, args.repeats, args.warmup)


def dit_segments(length: int, pad_tokens: int) -> jax.Array:
    """[image + valid text] = 0, then ``pad_tokens`` of padded text = 1."""
    return (jnp.arange(length) >= length - pad_tokens).astype(jnp.int32)[None].repeat(BATCH, 0)


def jax_rows(length: int, backward: bool, args: argparse.Namespace) -> dict[str, float | str]:
    """Seconds per implementation (or the reason it was skipped)."""
    from hcjax.nn.attention import xla_attention

    head_major = jax_inputs(length)
    seq_major = tuple(jnp.swapaxes(x, 1, 2) for x in head_major)
    rows: dict[str, Callable] = {
        "pallas": lambda: time_jax(pallas_attend(args), head_major, backward, args),
        "pallas+seg": lambda: time_jax(pallas_attend(args, dit_segments(length, args.pad_tokens)), head_major,
                                       backward, args),
        "cudnn": lambda: time_jax(cudnn_attend, seq_major, backward, args),
        "xla": lambda: (time_jax(xla_attention, head_major, backward, args) if xla_fits(length, backward)
                        else "skipped: logits would not fit in GPU memory"),
    }
    return {name: guarded(fn) for name, fn in rows.items()}


def guarded(fn: Callable) -> float | str:
    """``fn()``, or ``'failed: ...'`` (first line of the error) so that one kernel cannot stop the run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - compile errors, OOM, unsupported configs
        return f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"


# ---------------------------------------------------------------------------------------------- torch


def torch_cuda():
    """The torch module if it is installed with CUDA, else a reason string."""
    try:
        import torch
    except ImportError:
        return "skipped: PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"skipped: PyTorch {torch.__version__} sees no CUDA device"
    return torch


def torch_row(length: int, backward: bool, args: argparse.Namespace) -> float | str:
    """Seconds of PyTorch's flash SDPA (head-major bf16), or the reason it was skipped."""
    torch = torch_cuda()
    if isinstance(torch, str):
        return torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(BATCH, HEADS, length, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=g,
                               requires_grad=i < 3) for i in range(4))

    def step():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), do) if backward else out.detach()

    try:
        return median_seconds(step, lambda _: torch.cuda.synchronize(), args.repeats, args.warmup)
    finally:
        q = k = v = do = None   # free the GPU memory before empty_cache
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- report


def report(length: int, backward: bool, rows: dict[str, float | str]) -> None:
    what = "forward+backward" if backward else "forward"
    print(f"\nL = {length}, {what} ({BATCH} x {HEADS} heads x {HEAD_DIM}, bf16)")
    for name, t in rows.items():
        if isinstance(t, str):
            print(f"  {name:11s} {t}")
        else:
            print(f"  {name:11s} {t * 1e3:10.2f} ms  {flops(length, backward) / t / 1e12:7.1f} TFLOP/s")
    timed = {n: t for n, t in rows.items() if not isinstance(t, str)}
    if "pallas" in timed and "cudnn" in timed:
        print(f"  speed pallas / cudnn      = {timed['cudnn'] / timed['pallas']:.3f}")
    jax_times = [t for n, t in timed.items() if n in ("pallas", "cudnn", "xla")]
    if jax_times and "torch" in timed:
        print(f"  speed best jax / torch    = {timed['torch'] / min(jax_times):.3f}")


def sweep(length: int, args: argparse.Namespace) -> None:
    """Times Pallas forward and forward+backward settings at ``length``."""
    inputs = jax_inputs(length)
    forward = [dict(block_q=bq, block_k=bk, num_warps=w, num_stages=s)
               for bq, bk in ((128, 64), (128, 128), (64, 64), (128, 32)) for w in (4, 8) for s in (2, 3)]
    backward = [dict(block_bwd=b, num_warps=w, num_stages=s)
                for b in ((128, 32), (64, 64), (128, 64), (64, 32), (32, 32)) for w in (4, 8) for s in (1, 2)]
    for is_backward, settings in ((False, forward), (True, backward)):
        print(f"\nsweep L = {length}, {'forward+backward' if is_backward else 'forward'}")
        for kw in settings:
            t = guarded(lambda: time_jax(pallas_attend(args, **kw), inputs, is_backward, args))
            shown = t if isinstance(t, str) else f"{t * 1e3:9.2f} ms {flops(length, is_backward) / t / 1e12:6.1f} TF/s"
            print(f"  {kw}: {shown}")


def main() -> None:
    args = parse_args()
    require_gpu()
    print(f"device: {jax.devices('gpu')[0].device_kind}, jax {jax.__version__}")
    if args.sweep:
        sweep(args.lengths[0], args)
        return
    for length in args.lengths:
        for backward in (False, True) if length <= args.backward_max else (False,):
            torch_time = torch_row(length, backward, args)  # first: JAX's allocator keeps what it takes
            rows = jax_rows(length, backward, args) | {"torch": torch_time}
            report(length, backward, rows)


if __name__ == "__main__":
    main()
