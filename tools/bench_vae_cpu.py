"""hcjax (jit) vs diffusers (eager) causal-VAE decode on the same CPU, interleaved, median of N runs.

Config: the official VAE structure at a quarter of its width (block channels 32/64/128/128, 2 layers per
block, 32 groups), latents 5 x 16 x 16 -> 17 frames of 128 x 128, fp32, untiled. Prints both medians and the
time ratio hcjax / diffusers (lower is better).

    python tools/bench_vae_cpu.py [--runs 5] [--latent 5 16 16]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hcjax import configs, convert  # noqa: E402
from hcjax.models import CausalVAE  # noqa: E402
from side_by_side import first_runs, interleaved_times, rel_l2, report  # noqa: E402
from tests.torch_reference import tiny_diffusers_vae, to_channels_first, to_channels_last  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latent", type=int, nargs=3, default=(5, 16, 16), metavar=("T", "H", "W"))
    args = parser.parse_args()

    cfg = configs.VAEConfig(block_channels=(32, 64, 128, 128), dtype="float32", param_dtype="float32")
    ref = tiny_diffusers_vae(cfg)
    params = jax.device_put(convert.vae_from_torch(ref.state_dict(), cfg))
    z = np.random.default_rng(0).standard_normal((1, *args.latent, cfg.latent_channels)).astype(np.float32)
    z_torch, z_jax = to_channels_first(z), jax.device_put(z)
    decode = jax.jit(functools.partial(CausalVAE(cfg).apply, method=CausalVAE.decode))

    def run_jax():
        return decode({"params": params}, z_jax).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return ref.decode(z_torch).sample

    out_jax, out_torch, compile_s = first_runs(run_jax, lambda: to_channels_last(run_torch()))
    err = rel_l2(out_jax, out_torch)
    times = interleaved_times(args.runs, hcjax=run_jax, diffusers=run_torch)
    print(f"config: block channels {cfg.block_channels}, latents {tuple(args.latent)} -> video {out_jax.shape[1:4]}; "
          f"torch threads {torch.get_num_threads()}, jax {jax.__version__} on {jax.devices()[0]}")
    print(f"hcjax compile+first run {compile_s:.2f} s; outputs agree to rel L2 {err:.2e}")
    report(times)


if __name__ == "__main__":
    main()
