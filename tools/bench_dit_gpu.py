"""The full 13B HunyuanVideo DiT forward on one GPU: hcjax (jit, bf16, random weights) beside diffusers'
``HunyuanVideoTransformer3DModel`` (bf16, SDPA) in the same run, at 544x960x129 (33 x 34 x 60 = 67,320 image
tokens + 256 text tokens) by default.

Prints seconds per forward (median of ``--repeats`` after warm-up), the achieved TFLOP/s and MFU against the
GPU's dense bf16 peak (``--peak-tflops``; 989 for H100 / H200 SXM), and the time ratio hcjax / diffusers.
FLOPs counted: every linear layer of the 20 double and 40 single blocks over its tokens (2 x in x out per token)
plus attention (4 x L^2 x hidden per block: q k^T and p v); embedders, refiner and final layer are left out
(< 0.5 %).

    python tools/bench_dit_gpu.py [--size 544x960x129] [--repeats 5] [--impl auto] [--skip-torch]

diffusers runs first and frees its memory, then hcjax (JAX preallocation off), so that one 80 GB GPU holds
one 26 GB model at a time. Without a GPU the script exits with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from hcjax.models.flops import dit_flops  # noqa: E402

TEXT_LEN = 256


def median_seconds(fn, sync, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latent_shape(height: int, width: int, frames: int) -> tuple[int, int, int]:
    return (frames - 1) // 4 + 1, height // 8, width // 8


def time_hcjax(size, repeats: int, impl: str) -> float:
    from hcjax import configs
    from hcjax.models import HunyuanVideoDiT, abstract_params

    cfg = dataclasses.replace(configs.get("hunyuan-video-t2v").dit, attention_impl=impl)
    key = jax.random.key(0)
    shapes = abstract_params(cfg)

    @jax.jit
    def init():
        leaves, treedef = jax.tree.flatten(shapes)
        keys = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(treedef, [(0.02 * jax.random.normal(k, s.shape, jnp.float32)).astype(s.dtype)
                                            for k, s in zip(keys, leaves)])

    params = init()
    t, h, w = latent_shape(*size)
    k = jax.random.split(jax.random.key(1), 3)
    latents = jax.random.normal(k[0], (1, t, h, w, cfg.in_channels), jnp.bfloat16)
    text = jax.random.normal(k[1], (1, TEXT_LEN, cfg.text_dim), jnp.bfloat16)
    mask = (jnp.arange(TEXT_LEN) < 40).astype(jnp.int32)[None]
    pooled = jax.random.normal(k[2], (1, cfg.pooled_dim), jnp.bfloat16)
    step = jnp.full((1,), 900.0)
    forward = jax.jit(lambda p: HunyuanVideoDiT(cfg).apply({"params": p}, latents, step, text, mask, pooled,
                                                           jnp.full((1,), 6016.0)))
    start = time.perf_counter()
    forward(params).block_until_ready()
    print(f"hcjax: compiled and ran once in {time.perf_counter() - start:.1f} s (attention impl {impl!r})")
    return median_seconds(lambda: forward(params), lambda x: x.block_until_ready(), repeats)


def time_diffusers(size, repeats: int) -> float | str:
    try:
        import torch
        from diffusers import HunyuanVideoTransformer3DModel
    except ImportError as e:
        return f"skipped ({e})"
    if not torch.cuda.is_available():
        return "skipped (no CUDA PyTorch)"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = HunyuanVideoTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
            num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
            qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768,
            rope_theta=256.0, rope_axes_dim=(16, 56, 56)).eval()
    torch.set_default_dtype(torch.float32)
    t, h, w = latent_shape(*size)
    dev, bf16 = "cuda", torch.bfloat16
    inputs = dict(hidden_states=torch.randn(1, 16, t, h, w, device=dev, dtype=bf16),
                  timestep=torch.full((1,), 900.0, device=dev),
                  encoder_hidden_states=torch.randn(1, TEXT_LEN, 4096, device=dev, dtype=bf16),
                  encoder_attention_mask=(torch.arange(TEXT_LEN, device=dev) < 40)[None].to(bf16),
                  pooled_projections=torch.randn(1, 768, device=dev, dtype=bf16),
                  guidance=torch.full((1,), 6016.0, device=dev))
    try:
        with torch.no_grad():
            seconds = median_seconds(lambda: model(**inputs, return_dict=False)[0],
                                     lambda _: torch.cuda.synchronize(), repeats)
    except torch.cuda.OutOfMemoryError as e:
        seconds = f"failed (out of memory: {str(e).splitlines()[0]})"
    model = inputs = None   # free the GPU memory before empty_cache (the closure above holds the names)
    torch.cuda.empty_cache()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="544x960x129", help="HEIGHTxWIDTHxFRAMES")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--impl", default="auto", help="hcjax attention impl")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args()
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        sys.exit(f"bench_dit_gpu: no GPU visible to JAX (backend {jax.default_backend()!r}); run it on a machine "
                 "with an NVIDIA GPU and jax[cuda].")
    size = tuple(int(x) for x in args.size.split("x"))
    t, h, w = latent_shape(*size)
    tokens = t * (h // 2) * (w // 2)
    flops = dit_flops(tokens, TEXT_LEN)
    print(f"{gpu.device_kind}: 13B DiT forward at {args.size} ({tokens} image + {TEXT_LEN} text tokens), "
          f"{flops / 1e15:.1f} PFLOP per forward")
    theirs = "skipped" if args.skip_torch else time_diffusers(size, args.repeats)
    ours = time_hcjax(size, args.repeats, args.impl)
    rows = [("hcjax", ours), ("diffusers (SDPA)", theirs)]
    for name, seconds in rows:
        if isinstance(seconds, str):
            print(f"{name:18s} {seconds}")
            continue
        achieved = flops / seconds / 1e12
        print(f"{name:18s} {seconds:8.3f} s/forward  {achieved:7.1f} TFLOP/s  MFU {achieved / args.peak_tflops:6.1%}")
    if not isinstance(theirs, str):
        print(f"time ratio hcjax / diffusers: {ours / theirs:.3f} (target <= 0.8)")


if __name__ == "__main__":
    main()
