"""HunyuanVideo-Avatar sampling: a character image, one audio per character (and their faces) -> a video as long
as the audio.

As the official pipeline (reference A.4, A.5): the reference image repeated over one window's frames is encoded
by the VAE (posterior *sample*, scaled); the audio windows are zero-padded to one window (``4 W - 3`` frames) or by
5 frames when longer; the latent loop is the position-shift fusion (``sampling.long_video``) over windows of the
model's length; each window takes a CFG step with the batch ``[uncond, cond]`` under the Avatar schedule
(``sampling.avatar_guidance``: negative text then positive text in the unconditional half, zero audio there, face
masks x0.6 for the first 10 steps); the step cache (``sampling.step_cache.avatar_cached_steps``) re-runs only the
last single block on 20 of 50 steps, from a cache kept per latent frame so that it follows the shifting windows
(the reference and text parts come from the window that last covered the window's first frame). The first ``V``
latent frames are decoded and the video is cut to the audio's length. The whole loop is one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning import AvatarCond
from hcjax.configs import DiTConfig, Preset, resolve_dtype
from hcjax.models import HunyuanVideoDiT
from hcjax.pipelines.custom import vae_posterior
from hcjax.pipelines.hunyuan_video import SampleResult, pad_text, run_and_decode
from hcjax.pipelines.progress import PhaseTimer, StepProgress
from hcjax.pipelines.request import SampleRequest, initial_noise
from hcjax.pipelines.text_inputs import TextEmbeddings
from hcjax.sampling import flow_sigmas
from hcjax.sampling.avatar_guidance import AvatarGuidance
from hcjax.sampling.long_video import LongVideoPlan, PositionShift, default_offset, fused_sample, plan_long_video
from hcjax.sampling.step_cache import avatar_cached_steps

EXTRA_PAD = 5   # zero audio frames appended to audio longer than one window (official)


@dataclasses.dataclass
class AvatarInputs:
    """The inputs of an Avatar sample (``pipelines.avatar_media`` prepares them from files).

    * ``reference [H, W, 3]`` in [-1, 1] at the request's size;
    * ``audio_feats [K, F, 10, 5, c]``: Whisper windows of each character's audio, one per video frame, ``F`` the
      frames the audio covers (``audio_features.audio_condition(..., task="avatar")``, capped at 400); the video
      has ``F`` frames;
    * ``face_masks [K, h, w]`` in [0, 1] at the latent size (None: every token, one character);
    * ``motion_exp [4]``, ``motion_pose [4]``, ``fps``: the official constants by default.
    """

    reference: np.ndarray
    audio_feats: np.ndarray
    face_masks: np.ndarray | None = None
    motion_exp: tuple[float, ...] = (30.0, 30.0, 30.0, 30.0)
    motion_pose: tuple[float, ...] = (25.0, 25.0, 25.0, 25.0)
    fps: float = 25.0

    @property
    def frames(self) -> int:
        return int(np.shape(self.audio_feats)[1])


def window_frames(request: SampleRequest) -> int:
    """Latent frames of one window: those of the request's ``frames`` (129 -> 33)."""
    return (request.frames - 1) // 4 + 1


def default_fusion(preset: Preset, request: SampleRequest) -> PositionShift:
    """Windows of the request's length; the official 10-frame shift (scaled for other window lengths); the
    official bf16 rounding / fp16 sums when the DiT computes in bf16, float32 otherwise."""
    w = window_frames(request)
    low = resolve_dtype(preset.dit.dtype) != jnp.float32
    return PositionShift(w, 10 if w == 33 else default_offset(w), "bfloat16" if low else None,
                         "float16" if low else "float32")


def padded_audio_frames(frames: int, window_video_frames: int) -> int:
    """The official padding: up to one window (``4 W - 3`` frames), or ``EXTRA_PAD`` more when longer."""
    return window_video_frames if frames <= window_video_frames else frames + EXTRA_PAD


def problems(preset: Preset, request: SampleRequest, inputs: AvatarInputs) -> list[str]:
    """Everything wrong with ``inputs`` for this model and request, each naming its fix."""
    out = []
    audio = preset.mechanism("face_audio")
    if audio is None or preset.mechanism("reference") is None:
        return [f"{preset.name} is not a HunyuanVideo-Avatar model; use hunyuan-avatar"]
    size = (request.height, request.width)
    if tuple(np.shape(inputs.reference)) != (*size, 3):
        out.append(f"the reference image must be [{size[0]}, {size[1]}, 3] (the video size), got "
                   f"{list(np.shape(inputs.reference))}")
    feats = np.shape(inputs.audio_feats)
    want = (audio.window, audio.layers, audio.channels)
    if len(feats) != 5 or tuple(feats[2:]) != want or feats[0] < 1 or feats[1] < 1:
        out.append(f"audio features must be [characters, frames, {', '.join(map(str, want))}], got {list(feats)}")
    elif inputs.face_masks is not None:
        latent = (request.height // preset.vae.spatial_ratio, request.width // preset.vae.spatial_ratio)
        if tuple(np.shape(inputs.face_masks)) != (feats[0], *latent):
            out.append(f"face masks must be [{feats[0]}, {latent[0]}, {latent[1]}] (one per character, latent "
                       f"size), got {list(np.shape(inputs.face_masks))}")
    elif feats[0] != 1:
        out.append(f"{feats[0]} characters need one face mask each")
    return out


def encode_reference(preset: Preset, vae_params, reference: np.ndarray, request: SampleRequest) -> jax.Array:
    """``[1, W, h, w, C]``: the VAE posterior sample (seeded from the request) of the image repeated over one
    window's ``4 W - 3`` frames, times the scaling factor."""
    frames = 4 * (window_frames(request) - 1) + 1
    video = jnp.broadcast_to(jnp.asarray(reference, jnp.float32), (1, frames, *np.shape(reference)))
    key = jax.random.fold_in(jax.random.key(request.seed), 0xA7A)
    dist = vae_posterior(preset.vae)(vae_params, video, request.vae_tiling)
    return dist.sample(key) * preset.vae.scaling_factor


def denoise_fn(cfg: DiTConfig, request: SampleRequest, plan: LongVideoPlan, fusion: PositionShift,
               guidance: AvatarGuidance = AvatarGuidance(), step_cache: bool = True,
               progress: StepProgress | None = None):
    """``fn(params, noise [1, L, h, w, C], audio [1, 4L, K, ...], text, negative, cond) -> latents [1, L, ...]``:
    the fused loop with the Avatar CFG schedule and the per-frame step cache."""
    steps = request.steps
    sigmas = flow_sigmas(steps, request.shift)
    cached = avatar_cached_steps(steps, step_cache)
    scales, mask_scales = jnp.asarray(guidance.scales(steps)), jnp.asarray(guidance.mask_scales(steps))
    negative_text = jnp.asarray(guidance.negative_text(steps))
    dtype = resolve_dtype(cfg.dtype)

    def run(params, noise, audio, text, negative, cond):
        dit = HunyuanVideoDiT(cfg)
        length = max(text.states.shape[1], negative.states.shape[1])
        pos, neg = pad_text(text, length), pad_text(negative, length)
        w = plan.window
        t, h, wd = (s // p for s, p in zip((w, *noise.shape[2:4]), cfg.patch_size))
        hw = h * wd
        twice = lambda x: jnp.concatenate([x, x], axis=0)   # noqa: E731

        def forward(x, a, timestep, i, cache, use_cache):
            uncond = jax.tree.map(lambda n, p: jnp.where(negative_text[i], n, p), neg, pos)
            texts = jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, pos)
            feats = einops.rearrange(a, "b f k ... -> b k f ...")
            c = AvatarCond(ref_latents=twice(cond.ref_latents),
                           audio_feats=jnp.concatenate([jnp.zeros_like(feats), feats], axis=0),
                           face_mask=twice(cond.face_mask * mask_scales[i]), motion_exp=twice(cond.motion_exp),
                           motion_pose=twice(cond.motion_pose), fps=twice(cond.fps))
            args = ({"params": params}, twice(x), twice(timestep), texts.states, texts.mask, texts.pooled, None, c)
            if use_cache:
                return dit.apply(*args, step_cache=cache), cache
            return dit.apply(*args, return_cache=True)

        def window_step(x, a, timestep, i, sigma, sigma_next, window, frames, state):
            video_cache, head_cache, owner = state

            def full(_):
                v, cache = forward(x, a, timestep, i, None, False)
                cache = cache.astype(dtype)
                vid = einops.rearrange(cache[:, hw:hw + t * hw], "b (t l) d -> b t l d", t=t)
                head = jnp.concatenate([cache[:, :hw], cache[:, hw + t * hw:]], axis=1)
                return v, (video_cache.at[:, frames].set(vid), head_cache.at[window].set(head),
                           owner.at[frames].set(window))

            def reuse(_):
                head = head_cache[owner[frames[0]]]
                vid = einops.rearrange(video_cache[:, frames], "b t l d -> b (t l) d")
                cache = jnp.concatenate([head[:, :hw], vid, head[:, hw:]], axis=1)
                v, _ = forward(x, a, timestep, i, cache, True)
                return v, (video_cache, head_cache, owner)

            if cached.any():
                v, state = jax.lax.cond(jnp.asarray(cached)[i], reuse, full, None)
            else:
                v, state = full(None)
            v_uncond, v_cond = jnp.split(v.astype(jnp.float32), 2, axis=0)
            v = v_uncond + scales[i] * (v_cond - v_uncond)
            return x + v * (sigma_next - sigma), state

        b2 = 2 * noise.shape[0]
        state = (jnp.zeros((b2, plan.total, hw, cfg.hidden_size), dtype),
                 jnp.zeros((plan.num_windows, b2, hw + length, cfg.hidden_size), dtype),
                 jnp.zeros((plan.total,), jnp.int32))
        latents, _ = fused_sample(window_step, noise, audio, sigmas, plan, fusion, state,
                                  progress=None if progress is None else progress.update)
        return latents.astype(jnp.float32)

    return run


def _cond(inputs: AvatarInputs, ref_latents: jax.Array) -> AvatarCond:
    """Batch-1 ``AvatarCond`` in the K-character layout (face masks ``[1, K, 1, h, w]``; none: all ones)."""
    k = np.shape(inputs.audio_feats)[0]
    masks = (np.ones((k, 1, 1), np.float32) if inputs.face_masks is None
             else np.asarray(inputs.face_masks, np.float32))
    return AvatarCond(ref_latents=ref_latents, face_mask=jnp.asarray(masks)[None, :, None],
                      motion_exp=jnp.asarray([inputs.motion_exp], jnp.float32),
                      motion_pose=jnp.asarray([inputs.motion_pose], jnp.float32),
                      fps=jnp.asarray([inputs.fps], jnp.float32))


def padded_audio(inputs: AvatarInputs, plan: LongVideoPlan) -> jax.Array:
    """``[1, 4L, K, ...]``: the windows zero-padded to ``plan.audio_frames`` and then to the loop's ``4 L``."""
    feats = np.asarray(inputs.audio_feats, np.float32)
    out = np.zeros((feats.shape[0], plan.audio_total, *feats.shape[2:]), np.float32)
    n = min(feats.shape[1], plan.audio_total)
    out[:, :n] = feats[:, :n]
    return jnp.asarray(einops.rearrange(out, "k f ... -> 1 f k ..."))


def generate_avatar(preset: Preset, dit_params, vae_params, text: TextEmbeddings, negative: TextEmbeddings,
                    request: SampleRequest, inputs: AvatarInputs, *, step_cache: bool = True,
                    fusion: PositionShift | None = None, guidance: AvatarGuidance | None = None,
                    progress: bool | StepProgress = True) -> SampleResult:
    """One video of ``inputs.frames`` frames (the audio's length) with the character of ``inputs.reference``."""
    found = request.problems(preset) + problems(preset, request, inputs)
    found += text.problems(preset.dit.text_dim, preset.dit.pooled_dim)
    found += negative.problems(preset.dit.text_dim, preset.dit.pooled_dim)
    if text.batch != 1 or negative.batch != 1:
        found.append("Avatar samples one video at a time: give one prompt")
    if found:
        raise ValueError("cannot sample:\n  " + "\n  ".join(found))
    fusion = fusion or default_fusion(preset, request)
    guidance = guidance or AvatarGuidance(cfg_scale=request.cfg_scale)
    plan = plan_long_video(padded_audio_frames(inputs.frames, request.frames), fusion)
    timer = PhaseTimer()
    with timer("encode conditions"):
        cond = jax.block_until_ready(_cond(inputs, encode_reference(preset, vae_params, inputs.reference, request)))
    bar = progress if isinstance(progress, StepProgress) else StepProgress(enabled=bool(progress))
    c = preset.vae.latent_channels
    shape = (1, plan.total, request.height // preset.vae.spatial_ratio, request.width // preset.vae.spatial_ratio, c)
    noise = initial_noise(request.seed, 1, shape[1:], request.noise_dtype)
    fn = denoise_fn(preset.dit, request, plan, fusion, guidance, step_cache, bar)
    kept = functools.partial(_keep, fn, plan.kept)
    result = run_and_decode(preset, kept, (dit_params, noise, padded_audio(inputs, plan), text, negative, cond),
                            vae_params, request, bar, timer)
    return dataclasses.replace(result, video=result.video[:, :inputs.frames])


def _keep(fn, kept: int, *args):
    return fn(*args)[:, :kept]
