"""The ``hcjax`` command.

    hcjax info --model PRESET          parameter count, memory and structure of a preset (no memory used)
    hcjax demo [--model tiny] [...]    a jit-compiled DiT forward pass of a small preset with random weights

Every input problem is reported in one line naming the fix, before any model is built (exit status 2).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import numpy as np


class UsageError(Exception):
    """Bad command-line input; the message names the fix."""


def _preset(name: str):
    from hcjax import configs

    try:
        return configs.get(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_info(args: argparse.Namespace) -> None:
    from hcjax.configs import resolve_dtype
    from hcjax.models import abstract_params, count_params

    preset = _preset(args.model)
    cfg = preset.dit
    n = count_params(abstract_params(cfg))
    itemsize = resolve_dtype(cfg.param_dtype).itemsize
    print(f"{preset.name}: {preset.description}")
    print(f"DiT: {n:,} params ({n * itemsize / 2**30:.2f} GiB as {resolve_dtype(cfg.param_dtype).name}); "
          f"hidden {cfg.hidden_size}, {cfg.num_heads} heads, {cfg.depth_double} double + {cfg.depth_single} "
          f"single blocks, patch {cfg.patch_size}, RoPE axes {cfg.rope_axes} theta {cfg.rope_theta:g}, "
          f"guidance embedding {'on' if cfg.guidance_embed else 'off'}")
    mechanisms = ", ".join(m.name for m in cfg.mechanisms) or "none"
    print(f"conditioning mechanisms: {mechanisms}")
    vae = preset.vae
    n_vae = count_params(abstract_params(vae))
    print(f"VAE: {n_vae:,} params ({n_vae * resolve_dtype(vae.param_dtype).itemsize / 2**20:.0f} MiB as "
          f"{resolve_dtype(vae.param_dtype).name}); channels {vae.block_channels}, {vae.latent_channels} latent "
          f"channels, {vae.temporal_ratio}x time / {vae.spatial_ratio}x space, scaling {vae.scaling_factor}")


def cmd_demo(args: argparse.Namespace) -> None:
    if args.frames < 1 or (args.frames - 1) % 4:
        raise UsageError(f"--frames {args.frames} is not 4k+1; use e.g. 1, 5, 9, 17")
    if args.height % 16 or args.width % 16 or args.height <= 0 or args.width <= 0:
        raise UsageError(f"--height {args.height} / --width {args.width} must be positive multiples of 16")
    preset = _preset(args.model)
    cfg = preset.dit
    if cfg.hidden_size > 1024:
        raise UsageError(f"preset {preset.name!r} is full size; the demo runs small presets (e.g. --model tiny)")

    import jax

    from hcjax.models import HunyuanVideoDiT, count_params, random_params

    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    rng = np.random.default_rng(args.seed)
    params = random_params(cfg, seed=args.seed)
    text_len = 16
    inputs = dict(
        latents=rng.standard_normal((1, *latent, cfg.in_channels)).astype(np.float32),
        timestep=np.asarray([1000.0], np.float32),
        text_states=rng.standard_normal((1, text_len, cfg.text_dim)).astype(np.float32),
        text_mask=(np.arange(text_len) < 11).astype(np.int32)[None],
        text_pooled=rng.standard_normal((1, cfg.pooled_dim)).astype(np.float32),
        guidance=np.asarray([6016.0], np.float32) if cfg.guidance_embed else None,
    )
    forward = jax.jit(HunyuanVideoDiT(cfg).apply)
    t0 = time.perf_counter()
    jax.block_until_ready(forward({"params": params}, **inputs))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = np.asarray(jax.block_until_ready(forward({"params": params}, **inputs)))
    run_s = time.perf_counter() - t0
    tokens = int(np.prod([n // p for n, p in zip(latent, cfg.patch_size)]))
    print(f"hcjax demo: preset {preset.name!r}, {count_params(params):,} random params, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    print(f"video {args.frames}x{args.height}x{args.width} -> latent {latent} x {cfg.in_channels} ch -> "
          f"{tokens} video tokens + {text_len} text tokens ({int(inputs['text_mask'].sum())} valid)")
    print(f"velocity {out.shape} {out.dtype}: mean {out.mean():+.4f}, std {out.std():.4f}, "
          f"finite {bool(np.isfinite(out).all())}")
    print(f"compile + first run {compile_s:.2f} s, forward {run_s * 1e3:.1f} ms")

    from hcjax.models import CausalVAE

    vae_params = random_params(preset.vae, seed=args.seed)
    decode = jax.jit(functools.partial(CausalVAE(preset.vae).apply, method=CausalVAE.decode))
    t0 = time.perf_counter()
    video = np.asarray(decode({"params": vae_params}, out / preset.vae.scaling_factor))
    print(f"VAE decode of the velocity as latents ({count_params(vae_params):,} random params): video "
          f"{video.shape}, finite {bool(np.isfinite(video).all())}, {time.perf_counter() - t0:.2f} s incl. compile")
    print("(random weights: the bundled trained demo model and video output come with the sampling issues)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcjax", description="HunyuanVideo family in JAX/Flax")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameter count and structure of a preset")
    info.add_argument("--model", required=True, help="preset name (see hcjax.configs.names())")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="run a small preset end to end with random weights")
    demo.add_argument("--model", default="tiny")
    demo.add_argument("--frames", type=int, default=9)
    demo.add_argument("--height", type=int, default=64)
    demo.add_argument("--width", type=int, default=96)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"hcjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
