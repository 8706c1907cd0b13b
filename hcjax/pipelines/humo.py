"""HuMo sampling on the HunyuanVideo backbone: text + reference images + audio -> video (reference B.2 - B.4).

* References (``humo_media.reference_pixels``: fitted into a white canvas of the video size) are VAE-encoded one
  image at a time as one-frame videos (the posterior *mean*, as HuMo's Wan VAE; times the scaling factor) ->
  ``n_ref`` clean latent frames that the DiT appends after the video (``conditioning.humo``). No reference image:
  one all-zero latent frame (HuMo's text + audio mode).
* Audio: HuMo's Whisper windows ``[T + n_ref, 8, 5, c]`` (``audio_features.audio_condition(task="humo")``), zero
  windows for the reference slots. "No audio" is all-zero windows.
* Guidance: ``sampling.TimeAdaptiveCFG`` with three branches in one batched forward per step:
  ``e(T, I, A)``, ``e(T, I, 0)`` and the negative, ``e(T-, I, 0)`` while the integer timestep is above 980, then
  ``e(T-, 0, 0)`` (zero reference latents), with text scale ``cfg_scale`` before and ``cfg_scale - 2`` after the
  switch; audio scale 5.5. Without a reference image there is no switch (the negative is ``e(T-, 0, 0)``
  throughout, text scale unchanged).
* The whole Euler loop (``flow_sigmas(steps, shift)``) is one compiled program; the latents are VAE-decoded.
* ``predict_face_mask``: the mask predictor's face probabilities for a finished sample (see its doc).
"""

from __future__ import annotations

import dataclasses
import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning import HumoCond
from hcjax.conditioning.mask_predictor import predicted_mask
from hcjax.configs import DiTConfig, Preset
from hcjax.models import HunyuanVideoDiT
from hcjax.pipelines.custom import vae_posterior
from hcjax.pipelines.hunyuan_video import SampleResult, pad_text, run_and_decode
from hcjax.pipelines.progress import PhaseTimer, StepProgress
from hcjax.pipelines.request import SampleRequest, initial_noise
from hcjax.pipelines.text_inputs import TextEmbeddings
from hcjax.sampling import TimeAdaptiveCFG, euler_sample, flow_sigmas, multi_branch

AUDIO_SCALE = 5.5       # HuMo's scale_a
SWITCH = 980.0          # HuMo's step_change: integer timesteps above it keep the image in the negative
MASK_TIMESTEP = 100.0   # noise level (sigma 0.1) at which predict_face_mask reads the finished latents


@dataclasses.dataclass
class HumoInputs:
    """The inputs of a HuMo sample (``cli.sample_humo`` prepares them from files).

    * ``audio_feats [T, 8, 5, c]`` or ``[T + n_ref, 8, 5, c]``: HuMo's Whisper windows of the ``T`` latent frames
      (the reference slots' zero windows appended or not);
    * ``references [n_ref, H, W, 3]`` in [-1, 1] at the request's size (``humo_media.reference_pixels``), or None
      (text + audio: one zero latent frame, no CFG switch).
    """

    audio_feats: np.ndarray
    references: np.ndarray | None = None

    @property
    def num_ref(self) -> int:
        """Reference latent frames the DiT sees (1 zero frame without references)."""
        return 1 if self.references is None else int(np.shape(self.references)[0])


def is_humo(preset: Preset) -> bool:
    """Whether the preset carries HuMo's appended references and audio windows."""
    from hcjax.conditioning.humo import HumoReference

    return isinstance(preset.mechanism("reference"), HumoReference) and preset.mechanism("audio") is not None


def problems(preset: Preset, request: SampleRequest, inputs: HumoInputs) -> list[str]:
    """Everything wrong with ``inputs`` for this model and request, each naming its fix."""
    if not is_humo(preset):
        return [f"{preset.name} is not a HuMo model; use humo (random weights: tiny-humo)"]
    out = []
    size = (request.height, request.width)
    if inputs.references is not None:
        refs = np.shape(inputs.references)
        if len(refs) != 4 or refs[0] < 1 or tuple(refs[1:]) != (*size, 3):
            out.append(f"reference images must be [n >= 1, {size[0]}, {size[1]}, 3] (fit them into the video size "
                       f"with humo_media.reference_pixels), got {list(refs)}")
            return out
    a = preset.mechanism("audio")
    t = request.latent_shape(preset)[0]
    want = (a.window, a.groups, a.channels)
    feats = np.shape(inputs.audio_feats)
    if len(feats) != 4 or tuple(feats[1:]) != want or feats[0] not in (t, t + inputs.num_ref):
        out.append(f"audio features must be [{t} or {t + inputs.num_ref}, {', '.join(map(str, want))}] (HuMo's "
                   f"windows of the {t} latent frames: audio_condition(task='humo', num_ref={inputs.num_ref})), got "
                   f"{list(feats)}")
    return out


def humo_guidance(request: SampleRequest, has_image: bool, audio_scale: float = AUDIO_SCALE,
                  switch: float | None = SWITCH) -> TimeAdaptiveCFG:
    """The time-adaptive CFG of a request: text scale ``request.cfg_scale``; no switch without an image."""
    return TimeAdaptiveCFG(text_scale=request.cfg_scale, audio_scale=audio_scale,
                           switch=switch if has_image else None)


def encode_conditions(preset: Preset, vae_params, inputs: HumoInputs, request: SampleRequest) -> HumoCond:
    """Batch-1 ``HumoCond``: reference latents ``[1, n_ref, h, w, C]`` (VAE posterior means of one-frame videos,
    scaled; one zero frame without references) and the windows ``[1, T + n_ref, 8, 5, c]``."""
    h, w, c = request.latent_shape(preset)[1:]
    if inputs.references is None:
        ref = jnp.zeros((1, 1, h, w, c), jnp.float32)
    else:
        pixels = jnp.asarray(inputs.references, jnp.float32)[:, None]                # [n, 1, H, W, 3]
        mean = vae_posterior(preset.vae)(vae_params, pixels, request.vae_tiling).mean
        ref = einops.rearrange(mean * preset.vae.scaling_factor, "n 1 h w c -> 1 n h w c").astype(jnp.float32)
    feats = np.asarray(inputs.audio_feats, np.float32)
    t = request.latent_shape(preset)[0]
    if feats.shape[0] == t:
        feats = np.concatenate([feats, np.zeros((inputs.num_ref, *feats.shape[1:]), np.float32)])
    return HumoCond(ref_latents=ref, audio_feats=jnp.asarray(feats)[None])


def velocity_fn(cfg: DiTConfig, guidance: TimeAdaptiveCFG):
    """``fn(params, x, timestep [B], text, negative, cond) -> v`` (float32): one batched DiT forward of the three
    branches ``(T, I, A)``, ``(T, I, 0)``, ``(T-, I or 0, 0)`` combined by ``guidance``. ``cond`` carries the
    reference latents (zeros for "no image") and the audio windows; zero audio / zero image are ``zeros_like``."""

    def velocity(params, x, timestep, text, negative, cond: HumoCond):
        dit = HunyuanVideoDiT(cfg)
        length = max(text.states.shape[1], negative.states.shape[1])
        pos, neg = pad_text(text, length), pad_text(negative, length)
        ref, audio = cond.ref_latents, cond.audio_feats
        no_audio, no_ref = jnp.zeros_like(audio), jnp.zeros_like(ref)

        def model_fn(xs, ts, branch):
            t, c = branch
            return dit.apply({"params": params}, xs, ts, t.states, t.mask, t.pooled, None, c).astype(jnp.float32)

        branches = guidance.branches((pos, HumoCond(ref, audio)), (pos, HumoCond(ref, no_audio)),
                                     (neg, HumoCond(ref, no_audio)), (neg, HumoCond(no_ref, no_audio)))
        return multi_branch(model_fn, branches, guidance.combine)(x, timestep)

    return velocity


def denoise_fn(cfg: DiTConfig, request: SampleRequest, guidance: TimeAdaptiveCFG,
               progress: StepProgress | None = None):
    """``fn(params, noise, text, negative, cond) -> latents``: the whole Euler loop with ``velocity_fn``."""
    sigmas = flow_sigmas(request.steps, request.shift)
    velocity = velocity_fn(cfg, guidance)

    def run(params, noise, text, negative, cond):
        return euler_sample(lambda x, t: velocity(params, x, t, text, negative, cond), noise, sigmas,
                            progress=None if progress is None else progress.update)

    return run


def generate_humo(preset: Preset, dit_params, vae_params, text: TextEmbeddings, negative: TextEmbeddings,
                  request: SampleRequest, inputs: HumoInputs, *, audio_scale: float = AUDIO_SCALE,
                  switch: float | None = SWITCH, cond: HumoCond | None = None, timer: PhaseTimer | None = None,
                  progress: bool | StepProgress = True) -> SampleResult:
    """One video of ``request.frames`` frames. ``negative``: the negative prompt's embeddings (the CLI uses the
    HunyuanCustom default negative prompt, ``templates.DEFAULT_NEGATIVE``, as the Custom pipeline does); ``cond``:
    ``encode_conditions``' output when already computed (else it is computed here); ``timer``: a ``PhaseTimer``
    to add the phases to."""
    found = request.problems(preset) + problems(preset, request, inputs)
    found += text.problems(preset.dit.text_dim, preset.dit.pooled_dim)
    found += negative.problems(preset.dit.text_dim, preset.dit.pooled_dim, "negative text")
    if text.batch != 1 or negative.batch != 1:
        found.append("HuMo samples one video at a time: give one prompt")
    if found:
        raise ValueError("cannot sample:\n  " + "\n  ".join(found))
    timer = PhaseTimer() if timer is None else timer
    if cond is None:
        with timer("encode conditions"):
            cond = jax.block_until_ready(encode_conditions(preset, vae_params, inputs, request))
    bar = progress if isinstance(progress, StepProgress) else StepProgress(enabled=bool(progress))
    noise = initial_noise(request.seed, 1, request.latent_shape(preset), request.noise_dtype)
    guidance = humo_guidance(request, inputs.references is not None, audio_scale, switch)
    fn = denoise_fn(preset.dit, request, guidance, bar)
    return run_and_decode(preset, fn, (dit_params, noise, text, negative, cond), vae_params, request, bar, timer)


@functools.lru_cache(maxsize=8)
def _mask_fn(cfg: DiTConfig):
    dit = HunyuanVideoDiT(cfg)

    def probs(params, x, timestep, text, cond):
        _, state = dit.apply({"params": params}, x, timestep, text.states, text.mask, text.pooled, None, cond,
                             mutable=["predictions"])
        return jax.nn.sigmoid(predicted_mask(state["predictions"]).astype(jnp.float32))

    return jax.jit(probs)


def predict_face_mask(preset: Preset, dit_params, latents, text: TextEmbeddings, cond: HumoCond, seed: int = 0,
                      timestep: float = MASK_TIMESTEP) -> np.ndarray:
    """The mask predictor's face probabilities ``[T, h, w]`` (latent size, sigmoid of its logits) for finished
    latents ``[1, T, h, w, C]`` (scaled): the latents are re-noised to ``timestep`` (default 100, sigma 0.1:
    ``0.9 x0 + 0.1 noise``, noise from ``seed``) and the DiT runs once on the full branch (positive text,
    the references, the audio), as in training, where the head sees noisy latents. Only for models with a
    ``HumoMaskPredictor``."""
    if preset.mechanism("mask_predictor") is None:
        raise ValueError(f"{preset.name} has no mask predictor")
    latents = jnp.asarray(latents, jnp.float32)
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 0xFACE), latents.shape, jnp.float32)
    s = np.float32(timestep / 1000.0)
    x = (1 - s) * latents + s * noise
    t = jnp.full((latents.shape[0],), timestep, jnp.float32)
    return np.asarray(_mask_fn(preset.dit)(dit_params, x, t, text, cond))[0]
