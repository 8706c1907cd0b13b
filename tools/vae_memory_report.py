"""Compiled peak memory of the full-size VAE decode of a 720x1280, 129-frame video (latents 33 x 90 x 160),
tiled at the official settings and untiled, from ``compiled.memory_analysis()`` (no weights, no data).

    python tools/vae_memory_report.py [--dtype float16] [--frames 129 --height 720 --width 1280] [--skip-untiled]

Peak = arguments + outputs + temporaries - aliased bytes. Nothing is executed.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from hcjax import configs
from hcjax.models import CausalVAE, abstract_params

GIB = 2**30


def analyse(cfg: configs.VAEConfig, latent_shape: tuple[int, ...], tiling: configs.VAETiling | None) -> dict:
    params = abstract_params(cfg)
    latents = jax.ShapeDtypeStruct(latent_shape, jnp.dtype(cfg.dtype))
    fn = jax.jit(functools.partial(CausalVAE(cfg).apply, tiling=tiling, method=CausalVAE.decode))
    t0 = time.perf_counter()
    compiled = fn.lower({"params": params}, latents).compile()
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return dict(args=m.argument_size_in_bytes, out=m.output_size_in_bytes, temp=m.temp_size_in_bytes, peak=peak,
                compile_s=time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float16", help="VAE compute and param dtype (official: float16)")
    parser.add_argument("--frames", type=int, default=129)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--skip-untiled", action="store_true")
    args = parser.parse_args()

    cfg = configs.get("hunyuan-video-t2v").vae.replace(dtype=args.dtype, param_dtype=args.dtype)
    s, r = cfg.spatial_ratio, cfg.temporal_ratio
    if (args.frames - 1) % r or args.height % s or args.width % s:
        parser.error(f"frames must be {r}k+1 and height / width multiples of {s}")
    shape = (1, (args.frames - 1) // r + 1, args.height // s, args.width // s, cfg.latent_channels)
    print(f"VAE decode of {args.frames}x{args.height}x{args.width} (latents {shape[1:4]}), {args.dtype}, "
          f"compiled for {jax.devices()[0].platform}")
    runs = [("tiled (official)", configs.VAETiling())] + ([] if args.skip_untiled else [("untiled", None)])
    for name, tiling in runs:
        r_ = analyse(cfg, shape, tiling)
        print(f"{name:17s} peak {r_['peak'] / GIB:8.2f} GiB  (params+inputs {r_['args'] / GIB:.2f}, output "
              f"{r_['out'] / GIB:.2f}, temporaries {r_['temp'] / GIB:.2f} GiB; compiled in {r_['compile_s']:.0f} s)")


if __name__ == "__main__":
    main()
