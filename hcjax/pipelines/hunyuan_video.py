"""Text-to-video and image-to-video with the HunyuanVideo DiT and causal VAE.

``generate`` runs: checks -> (I2V) image latent -> initial noise -> one compiled denoising program (the whole
Euler loop with guidance) -> VAE decode -> uint8 frames. Each program is compiled ahead of time so that
compile, denoise and decode are timed separately.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import DiTConfig, Preset, VAEConfig
from hcjax.io import to_uint8
from hcjax.models import CausalVAE, HunyuanVideoDiT
from hcjax.pipelines.progress import PhaseTimer, StepProgress
from hcjax.pipelines.request import SampleRequest, initial_noise, stability_start
from hcjax.pipelines.text_inputs import TextEmbeddings
from hcjax.sampling import classic_cfg, embedded_guidance, euler_sample, flow_sigmas, multi_branch, single


@dataclasses.dataclass
class SampleResult:
    video: np.ndarray        # uint8 [B, F, H, W, 3]
    latents: np.ndarray      # float32 [B, T, h, w, C], scaled (what the DiT sees)
    timings: PhaseTimer


def pad_text(a: TextEmbeddings, length: int) -> TextEmbeddings:
    """Right-pads text states / mask with zeros to ``length`` tokens (padding is masked out everywhere)."""
    extra = length - a.states.shape[1]
    if extra <= 0:
        return a
    return TextEmbeddings(jnp.pad(a.states, ((0, 0), (0, extra), (0, 0))), jnp.pad(a.mask, ((0, 0), (0, extra))),
                          a.pooled)


def denoise_fn(cfg: DiTConfig, request: SampleRequest, progress: StepProgress | None = None):
    """``fn(params, noise, text, negative, image_latent) -> latents``: the whole sampling loop, to be jitted.

    ``negative`` is used only with classic CFG (branches ``[cond, uncond]`` in one batched forward);
    ``image_latent [B, 1, h, w, C]`` (scaled) makes it image-to-video: the first latent frame is the image,
    never noised, in the model input at every step and in the result.
    """
    sigmas = flow_sigmas(request.steps, request.shift)

    def run(params, noise, text, negative=None, image_latent=None):
        dit = HunyuanVideoDiT(cfg)
        batch = noise.shape[0]
        guidance = embedded_guidance(request.embedded_guidance, batch) if cfg.guidance_embed else None

        def model_fn(x, t, branch):
            emb = branch["text"]
            return dit.apply({"params": params}, x, t, emb.states, emb.mask, emb.pooled, guidance=branch["guidance"])

        if request.uses_cfg:
            length = max(text.states.shape[1], negative.states.shape[1])
            branches = [dict(text=pad_text(text, length), guidance=guidance),
                        dict(text=pad_text(negative, length), guidance=guidance)]
            velocity = multi_branch(model_fn, branches, classic_cfg(request.cfg_scale))
        else:
            velocity = multi_branch(model_fn, [dict(text=text, guidance=guidance)], single)
        x, constrain = noise, None
        if image_latent is not None:
            image_latent = image_latent.astype(jnp.float32)
            x = stability_start(noise, image_latent) if request.i2v_stability else noise
            constrain = lambda z: z.at[:, :1].set(image_latent)  # noqa: E731
        return euler_sample(velocity, x, sigmas, constrain=constrain,
                            progress=None if progress is None else progress.update)

    return run


def check(preset: Preset, request: SampleRequest, text: TextEmbeddings | None, negative: TextEmbeddings | None,
          image: np.ndarray | None) -> None:
    """Every problem of a sampling call in one ``ValueError``, before any compile (``text=None``: the text is
    encoded later by encoders that fit the model; its checks are skipped)."""
    problems = request.problems(preset)
    d = preset.dit
    if text is not None:
        problems += text.problems(d.text_dim, d.pooled_dim)
    if request.uses_cfg and text is not None:
        if negative is None:
            problems.append(f"cfg_scale {request.cfg_scale} needs negative text embeddings (or use cfg_scale 1)")
        else:
            problems += negative.problems(d.text_dim, d.pooled_dim, "negative text")
    if preset.image_to_video and image is None:
        problems.append(f"{preset.name} is an image-to-video model: give a first-frame image")
    if not preset.image_to_video and image is not None:
        problems.append(f"{preset.name} is a text-to-video model: an image needs an I2V model "
                        "(e.g. hunyuan-video-i2v)")
    if image is not None and tuple(image.shape[-3:]) != (request.height, request.width, 3):
        problems.append(f"image must be [..., {request.height}, {request.width}, 3] in [-1, 1] (use "
                        f"pipelines.buckets.i2v_image to fit it), got {tuple(image.shape)}")
    if problems:
        raise ValueError("cannot sample:\n  " + "\n  ".join(problems))


def generate(preset: Preset, dit_params, vae_params, text: TextEmbeddings, request: SampleRequest,
             negative: TextEmbeddings | None = None, image: np.ndarray | None = None,
             progress: bool | StepProgress = True) -> SampleResult:
    """Samples ``text.batch`` videos. ``image``: the first frame ``[H, W, 3]`` or ``[B, H, W, 3]`` in
    [-1, 1] at the request's size (image-to-video models only)."""
    check(preset, request, text, negative, image)
    timer = PhaseTimer()
    batch = text.batch
    if negative is not None and request.uses_cfg:
        negative = negative.repeat(batch)
    vae = CausalVAE(preset.vae)
    scale = preset.vae.scaling_factor

    image_latent = None
    if image is not None:
        frames = jnp.broadcast_to(jnp.asarray(image, jnp.float32).reshape(-1, 1, *image.shape[-3:]),
                                  (batch, 1, *image.shape[-3:]))
        with timer("encode image"):
            encode = jax.jit(functools.partial(vae.apply, method=CausalVAE.encode))
            image_latent = jax.block_until_ready(encode({"params": vae_params}, frames) * scale)

    bar = progress if isinstance(progress, StepProgress) else StepProgress(enabled=bool(progress))
    noise = initial_noise(request.seed, batch, request.latent_shape(preset), request.noise_dtype)
    args = (dit_params, noise, text, negative if request.uses_cfg else None, image_latent)
    return run_and_decode(preset, denoise_fn(preset.dit, request, bar), args, vae_params, request, bar, timer)


def run_and_decode(preset: Preset, fn, args: tuple, vae_params, request: SampleRequest, bar: StepProgress,
                   timer: PhaseTimer) -> SampleResult:
    """Compiles the denoising program ``fn(*args) -> latents`` ahead of time, runs it with the progress bar,
    decodes the latents; each phase timed."""
    with timer("compile"):
        compiled = jax.jit(fn).lower(*args).compile()
    bar.start(request.steps)
    try:
        with timer("denoise"):
            latents = jax.block_until_ready(compiled(*args))
    finally:
        bar.close()
    with timer("decode"):
        video = to_uint8(np.asarray(vae_decoder(preset.vae)({"params": vae_params},
                                                            latents / preset.vae.scaling_factor, request.vae_tiling)))
    return SampleResult(video, np.asarray(latents), timer)


@functools.lru_cache(maxsize=8)
def vae_decoder(cfg: VAEConfig):
    """``decode(variables, latents, tiling) -> pixels``: the VAE's jitted decoder, one per config (so repeated
    samples of one shape compile once)."""
    return jax.jit(functools.partial(CausalVAE(cfg).apply, method=CausalVAE.decode), static_argnums=2)
