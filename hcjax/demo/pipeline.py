"""The demo model end to end on batches: pixels -> latents (the dataset tool), and captions + reference images ->
videos (``hcjax demo``, ``hcjax sample --model demo``, the evaluation).

Latents follow HunyuanCustom's conventions (``pipelines.custom``): the clip is the VAE posterior mean, a reference
image a posterior sample, both times the VAE scaling factor; sampling is ``pipelines.custom.denoise_fn`` (classic
CFG against the empty prompt with the same reference, Euler, one compiled loop), each sample with its own
reference and caption.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning import CustomCond
from hcjax.configs import Preset
from hcjax.demo.text import DemoTextEncoder
from hcjax.io.video import image_to_unit_range, to_uint8
from hcjax.pipelines.custom import denoise_fn, vae_posterior
from hcjax.pipelines.hunyuan_video import vae_decoder
from hcjax.pipelines.request import SampleRequest, initial_noise


def clip_latents(preset: Preset, vae_params, videos: np.ndarray) -> np.ndarray:
    """``[B, F, H, W, 3]`` uint8 -> scaled posterior means ``[B, T, h, w, C]`` float32."""
    posterior = vae_posterior(preset.vae)(vae_params, jnp.asarray(image_to_unit_range(videos)), None)
    return np.asarray(posterior.mean * preset.vae.scaling_factor, np.float32)


def reference_latents(preset: Preset, vae_params, images: np.ndarray, key: jax.Array) -> np.ndarray:
    """``[B, H, W, 3]`` uint8 reference images -> scaled posterior samples ``[B, 1, h, w, C]`` float32 (one
    subject each)."""
    posterior = vae_posterior(preset.vae)(vae_params, jnp.asarray(image_to_unit_range(images))[:, None],
                                         None)
    return np.asarray(posterior.sample(key) * preset.vae.scaling_factor, np.float32)


def reconstruct(preset: Preset, vae_params, videos: np.ndarray) -> np.ndarray:
    """``[B, F, H, W, 3]`` uint8 through the VAE (posterior mean, decoded): the ceiling of what the DiT can show."""
    posterior = vae_posterior(preset.vae)(vae_params, jnp.asarray(image_to_unit_range(videos)), None)
    return to_uint8(np.asarray(vae_decoder(preset.vae)({"params": vae_params}, posterior.mean, None)))


@functools.lru_cache(maxsize=4)
def _sampler(preset: Preset, request: SampleRequest):
    return jax.jit(denoise_fn(preset.dit, request, step_cache=False))


def generate(preset: Preset, dit_params, vae_params, captions: list[str], references: np.ndarray,
             request: SampleRequest, encoder: DemoTextEncoder | None = None) -> np.ndarray:
    """Videos ``[B, F, H, W, 3]`` uint8 of ``captions`` with the subjects of ``references [B, H, W, 3]`` uint8;
    noise and reference samples from ``request.seed``."""
    encoder = encoder or DemoTextEncoder()
    b = len(captions)
    if references.shape[0] != b:
        raise ValueError(f"{b} captions but {references.shape[0]} reference images; give one reference per caption")
    key = jax.random.fold_in(jax.random.key(request.seed), 0x5EED)
    refs = reference_latents(preset, vae_params, references, key)
    cond = CustomCond(ref_latents=jnp.asarray(refs), audio_strength=np.float32(1.0))
    text = encoder.encode(list(captions))
    negative = encoder.encode([""] * b) if request.uses_cfg else None
    noise = initial_noise(request.seed, b, request.latent_shape(preset), request.noise_dtype)
    latents = _sampler(preset, request)(dit_params, noise, text, negative, cond)
    video = vae_decoder(preset.vae)({"params": vae_params}, latents / preset.vae.scaling_factor, request.vae_tiling)
    return to_uint8(np.asarray(video))
