"""A 30-step sample of the tiny preset: hcjax's compiled loop vs a diffusers loop with the same model, on CPU.

The diffusers side runs the converted-from model (``HunyuanVideoTransformer3DModel``) stepped by
``FlowMatchEulerDiscreteScheduler`` exactly as ``HunyuanVideoPipeline``'s loop does (same noise, sigmas and
embedded guidance), and decodes with ``AutoencoderKLHunyuanVideo``. Prints medians and the ratios
hcjax / diffusers for the denoising part (target <= 0.9) and for denoise + decode.

    python tools/bench_sample_cpu.py [--runs 5] [--steps 30] [--cfg-scale 1.0]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax import configs, convert  # noqa: E402
from hcjax.models import CausalVAE  # noqa: E402
from hcjax.pipelines import SampleRequest, TextEmbeddings, denoise_fn  # noqa: E402
from side_by_side import first_runs, interleaved_times, rel_l2, report  # noqa: E402
from tests.torch_reference import tiny_diffusers_dit, tiny_diffusers_vae  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    args = parser.parse_args()
    from diffusers import FlowMatchEulerDiscreteScheduler

    preset = configs.get("tiny")
    cfg = preset.dit.replace(guidance_embed=args.cfg_scale == 1.0)
    request = SampleRequest.defaults(preset, steps=args.steps, cfg_scale=args.cfg_scale)
    ref, ref_vae = tiny_diffusers_dit(cfg, seed=0), tiny_diffusers_vae(preset.vae, seed=1)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    vae_params = convert.vae_from_torch(ref_vae.state_dict(), preset.vae)

    g = torch.Generator().manual_seed(0)
    t, h, w, c = request.latent_shape(preset)
    noise = torch.randn(1, c, t, h, w, generator=g)
    text = [torch.randn(1, 32, cfg.text_dim, generator=g), torch.ones(1, 32, dtype=torch.int64),
            torch.randn(1, cfg.pooled_dim, generator=g)]
    negative = [torch.randn(1, 32, cfg.text_dim, generator=g), torch.ones(1, 32, dtype=torch.int64),
                torch.randn(1, cfg.pooled_dim, generator=g)]
    guidance = torch.tensor([6016.0]) if cfg.guidance_embed else None
    emb = lambda e: TextEmbeddings(e[0].numpy(), e[1].numpy().astype(np.int32), e[2].numpy())  # noqa: E731

    denoise = jax.jit(denoise_fn(cfg, request))
    decode = jax.jit(functools.partial(CausalVAE(preset.vae).apply, method=CausalVAE.decode))
    jax_args = jax.device_put((params, noise.permute(0, 2, 3, 4, 1).numpy(), emb(text),
                               emb(negative) if request.uses_cfg else None))
    scale = preset.vae.scaling_factor

    def jax_denoise():
        return denoise(*jax_args).block_until_ready()

    def jax_end_to_end():
        return decode({"params": vae_params}, jax_denoise() / scale).block_until_ready()

    def torch_denoise():
        sched = FlowMatchEulerDiscreteScheduler(shift=request.shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, request.steps + 1)[:-1])
        x = noise.clone()
        with torch.inference_mode():
            for ts in sched.timesteps:
                tb = ts.expand(1)
                v = ref(x, tb, *text[:2], text[2], guidance, return_dict=False)[0]
                if request.uses_cfg:
                    vu = ref(x, tb, *negative[:2], negative[2], guidance, return_dict=False)[0]
                    v = vu + request.cfg_scale * (v - vu)
                x = sched.step(v, ts, x, return_dict=False)[0]
        return x

    def torch_end_to_end():
        with torch.inference_mode():
            return ref_vae.decode(torch_denoise() / scale, return_dict=False)[0]

    out_jax, out_torch, compile_s = first_runs(jax_denoise, lambda: torch_denoise().permute(0, 2, 3, 4, 1))
    err = rel_l2(out_jax, out_torch)
    jax_end_to_end()
    print(f"tiny preset, latent {t}x{h}x{w}, {request.steps} steps, shift {request.shift}, "
          f"{'CFG ' + str(request.cfg_scale) if request.uses_cfg else 'embedded guidance'}; torch threads "
          f"{torch.get_num_threads()}, jax {jax.__version__} on {jax.devices()[0]}")
    print(f"hcjax compile+first run {compile_s:.2f} s; final latents agree to rel L2 {err:.2e}")
    print("-- denoising loop")
    report(interleaved_times(args.runs, hcjax=jax_denoise, diffusers=torch_denoise))
    print("-- denoise + VAE decode")
    report(interleaved_times(args.runs, hcjax=jax_end_to_end, diffusers=torch_end_to_end))


if __name__ == "__main__":
    main()
