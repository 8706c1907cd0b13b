"""HunyuanCustom sampling: subject references (+ audio, or + a masked source video) -> video.

As the official pipeline (reference sections 5 and 6): reference images and the editing videos are encoded by
the VAE (posterior *samples*, scaled); the CFG batch is ``[uncond, cond]`` with the same references and
background in both halves, the negative text (LLaVA with a white image, its own mask) and zero audio in the
unconditional one; ``v = v_u + g (v_c - v_u)``; shift 13 / 30 steps (image, audio) or 5 / 50 (editing); the
step cache (``sampling.step_cache``) re-runs only the last single block on 8 of 30 steps. The whole loop,
cache included, is one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning import CustomCond
from hcjax.configs import DiTConfig, Preset, VAEConfig, resolve_dtype
from hcjax.models import CausalVAE, HunyuanVideoDiT
from hcjax.pipelines.hunyuan_video import SampleResult, pad_text, run_and_decode
from hcjax.pipelines.progress import PhaseTimer, StepProgress
from hcjax.pipelines.request import SampleRequest, initial_noise
from hcjax.pipelines.text_inputs import TextEmbeddings
from hcjax.sampling import cached_steps, classic_cfg, euler_sample_with_state, flow_sigmas


@dataclasses.dataclass
class CustomInputs:
    """The pixel inputs of a HunyuanCustom sample, at the request's size, in [-1, 1]
    (``pipelines.custom_media`` prepares them from files)."""

    references: np.ndarray                  # [n_subjects, H, W, 3]
    audio_feats: np.ndarray | None = None   # [F, 10, 5, c] Whisper windows (audio model)
    masked_video: np.ndarray | None = None  # [F, H, W, 3] source with the edited area black (editing model)
    mask: np.ndarray | None = None          # [F, H, W, 3] the binary mask (editing model)
    audio_strength: float = 1.0


def problems(preset: Preset, request: SampleRequest, inputs: CustomInputs) -> list[str]:
    """Everything wrong with ``inputs`` for this model and request, each naming its fix."""
    out = []
    size = (request.height, request.width)
    if preset.mechanism("identity") is None:
        out.append(f"{preset.name} is not a HunyuanCustom model (no reference-image input)")
    refs = np.asarray(inputs.references)
    if refs.ndim != 4 or refs.shape[0] < 1 or tuple(refs.shape[1:]) != (*size, 3):
        out.append(f"reference images must be [n >= 1, {size[0]}, {size[1]}, 3] (pad them to the video size with "
                   f"custom_media.reference_pixels), got {tuple(refs.shape)}")
    audio = preset.mechanism("audio")
    if audio is not None and inputs.audio_feats is None:
        out.append(f"{preset.name} is driven by audio: give the audio")
    if audio is None and inputs.audio_feats is not None:
        out.append(f"{preset.name} takes no audio; use hunyuan-custom-audio")
    if audio is not None and inputs.audio_feats is not None:
        want = (request.frames, audio.window, audio.layers, audio.channels)
        if tuple(np.shape(inputs.audio_feats)) != want:
            out.append(f"audio features must be {list(want)} (one Whisper window per video frame), got "
                       f"{list(np.shape(inputs.audio_feats))}")
    editing = preset.mechanism("editing") is not None
    given = inputs.masked_video is not None or inputs.mask is not None
    if editing and (inputs.masked_video is None or inputs.mask is None):
        out.append(f"{preset.name} edits a video: give the source video and its mask")
    if not editing and given:
        out.append(f"{preset.name} takes no source video; use hunyuan-custom-editing")
    if editing and given and inputs.masked_video is not None and inputs.mask is not None:
        for name, v in (("source video", inputs.masked_video), ("mask", inputs.mask)):
            if tuple(np.shape(v)) != (request.frames, *size, 3):
                out.append(f"the {name} must be [{request.frames}, {size[0]}, {size[1]}, 3], got {list(np.shape(v))}")
    return out


@functools.lru_cache(maxsize=8)
def vae_posterior(cfg: VAEConfig):
    """``posterior(params, video, tiling) -> DiagonalGaussian``: the VAE's jitted posterior, one per config (so
    each input shape compiles once)."""
    vae = CausalVAE(cfg)
    return jax.jit(lambda params, video, tiling: vae.apply({"params": params}, video, tiling,
                                                           method=CausalVAE.encode_distribution), static_argnums=2)


def encode_conditions(preset: Preset, vae_params, inputs: CustomInputs, request: SampleRequest) -> CustomCond:
    """``CustomCond`` (batch 1) of the inputs: VAE posterior samples (keys from the request's seed) times the
    scaling factor; the audio windows as given."""
    posterior = vae_posterior(preset.vae)
    scale = preset.vae.scaling_factor
    key = jax.random.fold_in(jax.random.key(request.seed), 0x5EED)

    def sample(pixels, k):
        return posterior(vae_params, jnp.asarray(pixels, jnp.float32), request.vae_tiling).sample(k) * scale

    refs = sample(np.asarray(inputs.references)[:, None], jax.random.fold_in(key, 0))   # [n, 1, h, w, C]
    cond = CustomCond(ref_latents=einops.rearrange(refs, "n 1 h w c -> 1 n h w c"),
                      audio_strength=np.float32(inputs.audio_strength))
    if inputs.audio_feats is not None:
        cond.audio_feats = jnp.asarray(inputs.audio_feats, jnp.float32)[None]
    if inputs.masked_video is not None:
        video = sample(np.asarray(inputs.masked_video)[None], jax.random.fold_in(key, 1))
        mask = sample(np.asarray(inputs.mask)[None], jax.random.fold_in(key, 2))
        cond.bg_latents = jnp.concatenate([video, mask], axis=-1)
    return cond


def _batched(cond: CustomCond, batch: int) -> CustomCond:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape[1:])) if jnp.ndim(x) else x, cond)


def cfg_batch(text: TextEmbeddings, negative: TextEmbeddings | None, cond: CustomCond
              ) -> tuple[TextEmbeddings, CustomCond]:
    """The official ``[uncond, cond]`` batch: negative then positive text (padded to one length), the same
    references and background twice, zero audio for the unconditional half. Without ``negative``: as given."""
    if negative is None:
        return text, cond
    length = max(text.states.shape[1], negative.states.shape[1])
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), pad_text(negative, length),
                        pad_text(text, length))
    twice = lambda x: None if x is None else jnp.concatenate([x, x], axis=0)   # noqa: E731
    audio = cond.audio_feats
    return both, CustomCond(ref_latents=twice(cond.ref_latents), bg_latents=twice(cond.bg_latents),
                            audio_feats=None if audio is None else jnp.concatenate([jnp.zeros_like(audio), audio]),
                            audio_strength=cond.audio_strength)


def denoise_fn(cfg: DiTConfig, request: SampleRequest, step_cache: bool = True, progress: StepProgress | None = None):
    """``fn(params, noise, text, negative, cond) -> latents``: the whole loop with CFG and the step cache."""
    sigmas = flow_sigmas(request.steps, request.shift)
    cached = cached_steps(request.steps, step_cache)
    combine = classic_cfg(request.cfg_scale)

    def run(params, noise, text, negative, cond):
        dit = HunyuanVideoDiT(cfg)
        texts, conds = cfg_batch(text, negative if request.uses_cfg else None, cond)
        n = texts.batch // noise.shape[0]

        def forward(x, t, cache, use_cache):
            xs, ts = jnp.concatenate([x] * n, axis=0), jnp.concatenate([t] * n, axis=0)
            args = ({"params": params}, xs, ts, texts.states, texts.mask, texts.pooled, None, conds)
            if use_cache:
                v, new = dit.apply(*args, step_cache=cache), cache
            else:
                v, new = dit.apply(*args, return_cache=True)
            vs = jnp.split(v, n, axis=0)
            return (combine(vs[::-1], t) if n == 2 else vs[0]), new.astype(cache.dtype)

        def velocity(x, t, i, cache):
            if not cached.any():
                return forward(x, t, cache, False)
            return jax.lax.cond(jnp.asarray(cached)[i], lambda c: forward(x, t, c, True),
                                lambda c: forward(x, t, c, False), cache)

        t, h, w = (s // p for s, p in zip(noise.shape[1:4], cfg.patch_size))
        subjects = 0 if conds.ref_latents is None else conds.ref_latents.shape[1]
        length = (t + subjects) * h * w + texts.states.shape[1]
        cache = jnp.zeros((texts.batch, length, cfg.hidden_size), resolve_dtype(cfg.dtype))
        latents, _ = euler_sample_with_state(velocity, noise, sigmas, cache,
                                             progress=None if progress is None else progress.update)
        return latents

    return run


def generate_custom(preset: Preset, dit_params, vae_params, text: TextEmbeddings, request: SampleRequest,
                    inputs: CustomInputs, negative: TextEmbeddings | None = None, step_cache: bool = True,
                    progress: bool | StepProgress = True) -> SampleResult:
    """Samples ``text.batch`` videos of the subjects in ``inputs``; ``negative`` is needed for CFG."""
    found = request.problems(preset) + problems(preset, request, inputs)
    found += text.problems(preset.dit.text_dim, preset.dit.pooled_dim)
    if request.uses_cfg and negative is None:
        found.append(f"cfg_scale {request.cfg_scale} needs negative text embeddings (or use cfg_scale 1)")
    if found:
        raise ValueError("cannot sample:\n  " + "\n  ".join(found))
    timer = PhaseTimer()
    batch = text.batch
    if negative is not None:
        negative = negative.repeat(batch)
    with timer("encode conditions"):
        cond = jax.block_until_ready(_batched(encode_conditions(preset, vae_params, inputs, request), batch))
    bar = progress if isinstance(progress, StepProgress) else StepProgress(enabled=bool(progress))
    noise = initial_noise(request.seed, batch, request.latent_shape(preset), request.noise_dtype)
    args = (dit_params, noise, text, negative if request.uses_cfg else None, cond)
    return run_and_decode(preset, denoise_fn(preset.dit, request, step_cache, bar), args, vae_params, request, bar,
                          timer)
