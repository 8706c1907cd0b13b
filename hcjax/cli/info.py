"""``hcjax info``: parameter counts and structure of a preset, without memory."""

from __future__ import annotations

import argparse

from hcjax.cli.common import preset


def run(args: argparse.Namespace) -> None:
    from hcjax.configs import resolve_dtype
    from hcjax.models import abstract_params, count_params

    p = preset(args.model)
    cfg = p.dit
    n = count_params(abstract_params(cfg))
    itemsize = resolve_dtype(cfg.param_dtype).itemsize
    print(f"{p.name}: {p.description}")
    print(f"DiT: {n:,} params ({n * itemsize / 2**30:.2f} GiB as {resolve_dtype(cfg.param_dtype).name}); "
          f"hidden {cfg.hidden_size}, {cfg.num_heads} heads, {cfg.depth_double} double + {cfg.depth_single} "
          f"single blocks, patch {cfg.patch_size}, RoPE axes {cfg.rope_axes} theta {cfg.rope_theta:g}, "
          f"guidance embedding {'on' if cfg.guidance_embed else 'off'}")
    mechanisms = ", ".join(m.name for m in cfg.mechanisms) or "none"
    print(f"conditioning mechanisms: {mechanisms}")
    vae = p.vae
    n_vae = count_params(abstract_params(vae))
    print(f"VAE: {n_vae:,} params ({n_vae * resolve_dtype(vae.param_dtype).itemsize / 2**20:.0f} MiB as "
          f"{resolve_dtype(vae.param_dtype).name}); channels {vae.block_channels}, {vae.latent_channels} latent "
          f"channels, {vae.temporal_ratio}x time / {vae.spatial_ratio}x space, scaling {vae.scaling_factor}")
    s = p.sampler
    guidance = f"embedded guidance {s.embedded_guidance}" if cfg.guidance_embed else f"CFG {s.cfg_scale}"
    print(f"sampling defaults: {s.frames}x{s.height}x{s.width}, {s.steps} steps, shift {s.shift}, {guidance}, "
          f"{s.fps:g} fps")


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameter count and structure of a preset")
    p.add_argument("--model", required=True, help="preset name (see hcjax.configs.names())")
    p.set_defaults(func=run)
