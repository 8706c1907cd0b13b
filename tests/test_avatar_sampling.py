"""HunyuanVideo-Avatar sampling: the guidance and cache schedules, the long-video plan and its window coverage,
the compiled fused loop against a step-by-step statement of the official loop (per-frame cache dictionaries,
scheduler reset per window, the CFG schedule), and a long video of 3 windows from a long audio."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from hcjax import configs
from hcjax.conditioning import AvatarCond
from hcjax.models import HunyuanVideoDiT, random_params
from hcjax.pipelines import avatar, text_inputs
from hcjax.pipelines.request import SampleRequest
from hcjax.sampling import flow_sigmas
from hcjax.sampling.avatar_guidance import AvatarGuidance
from hcjax.sampling.long_video import PositionShift, plan_long_video
from hcjax.sampling.step_cache import avatar_cached_steps


def test_guidance_schedule_is_the_official_one():
    g = AvatarGuidance()
    s = g.scales(50)
    np.testing.assert_allclose(s[[0, 9, 10, 49]], [7.5, 2 + 5.5 * 0.82, 3.5 + 3.0 * 0.8, 3.5 + 3.0 * 0.02], rtol=1e-6)
    np.testing.assert_array_equal(g.mask_scales(50)[:10], np.float32(0.6))
    np.testing.assert_array_equal(g.mask_scales(50)[10:], 1.0)
    np.testing.assert_array_equal(np.flatnonzero(g.negative_text(50)), np.arange(10))


def test_cached_steps_are_the_official_list():
    want = [i for r in ((16, 20), (21, 25), (26, 30), (31, 35), (36, 40)) for i in range(*r)]
    np.testing.assert_array_equal(np.flatnonzero(avatar_cached_steps(50)), want)
    assert not avatar_cached_steps(50, enabled=False).any()
    np.testing.assert_array_equal(np.flatnonzero(avatar_cached_steps(20)), [16, 17, 18, 19])


@pytest.mark.parametrize("audio,kept,total,windows", [(129, 33, 33, 1), (134, 34, 65, 2), (200, 51, 65, 2),
                                                      (257, 65, 97, 3), (405, 102, 129, 4)])
def test_long_video_lengths(audio, kept, total, windows):
    plan = plan_long_video(audio, PositionShift())
    assert (plan.kept, plan.total, plan.num_windows) == (kept, total, windows)
    assert plan.offset == (0 if windows == 1 else 10)


@pytest.mark.parametrize("audio", [134, 257, 405])
def test_windows_cover_every_frame_the_documented_number_of_times(audio):
    """At each step the windows are consecutive runs of 33 frames starting ``shift`` before 0, 33, 66, ... and
    wrapping around, so every frame is covered once, and the ``33 n - L`` frames starting at ``-shift`` twice; the
    shift advances by 10 mod 33; the audio windows are the matching 129 frames, 4 per latent frame."""
    plan = plan_long_video(audio, PositionShift())
    steps = 50
    cover = plan.coverage(steps)
    for i, shift in enumerate(plan.shifts(steps)):
        assert shift == (10 * i) % 33
        doubled = [(-shift + k) % plan.total for k in range(33 * plan.num_windows - plan.total)]
        want = np.ones(plan.total, int)
        want[doubled] += 1
        np.testing.assert_array_equal(cover[i], want)
        frames, sound = plan.latent_indices(int(shift)), plan.audio_indices(int(shift))
        for w in range(plan.num_windows):
            start = 33 * w - shift
            np.testing.assert_array_equal(frames[w], [(start + k) % plan.total for k in range(33)])
            np.testing.assert_array_equal(sound[w], [(4 * start + k) % (4 * plan.total) for k in range(129)])
    assert cover.sum(0).min() >= steps


def _setup(frames: int, seed: int = 0, characters: int = 1):
    p = configs.get("tiny-avatar")
    cfg = p.dit.replace(depth_single=2)
    params = random_params(cfg, seed)
    rng = np.random.default_rng(seed)
    request = SampleRequest.defaults(p, steps=20)
    d = cfg
    text = text_inputs.placeholder("a woman sings", d.text_dim, d.pooled_dim, length=12)
    negative = text_inputs.placeholder("blurry", d.text_dim, d.pooled_dim, length=12)
    masks = np.zeros((characters, 8, 8), np.float32)
    masks[0, :, :5] = 1.0
    if characters > 1:
        masks[1, :, 4:] = 0.5
    inputs = avatar.AvatarInputs(reference=rng.uniform(-1, 1, (64, 64, 3)).astype(np.float32),
                                 audio_feats=rng.standard_normal((characters, frames, 10, 5, 16)).astype(np.float32),
                                 face_masks=masks)
    return p, cfg, params, request, text, negative, inputs


def _official_loop(cfg, params, noise, audio, text, negative, cond, request, plan, guidance):
    """The official ``pipeline_hunyuan_video_audio`` loop, literally: Python loops over steps and windows,
    ``cache_tensor`` dictionaries with "ref" / "img" / "txt" per latent frame, the cached steps reading the
    window's first frame slot for "ref" and "txt"; one DiT call per window on the [uncond, cond] batch."""
    dit = jax.jit(lambda c, x, t, ts, tm, tp, use, cache, ret: HunyuanVideoDiT(cfg).apply(
        {"params": params}, x, t, ts, tm, tp, None, c, step_cache=cache if use else None, return_cache=ret),
        static_argnames=("use", "ret"))
    sigmas = flow_sigmas(request.steps, request.shift)
    cached = avatar_cached_steps(request.steps)
    scales, mask_scales = guidance.scales(request.steps), guidance.mask_scales(request.steps)
    latents_all = np.asarray(noise, np.float32)
    audio_all = np.asarray(audio, np.float32)                   # [1, 4L, K, ...]
    w, total = plan.window, plan.total
    hw = (noise.shape[2] // 2) * (noise.shape[3] // 2)
    shift, cache_tensor, cache_out = 0, None, None
    for i in range(request.steps):
        pred, counter = np.zeros_like(latents_all), np.zeros(total)
        uncond = negative if i < guidance.switch else text
        states = np.concatenate([uncond.states, text.states])
        mask = np.concatenate([uncond.mask, text.mask])
        pooled = np.concatenate([uncond.pooled, text.pooled])
        for index_start in range(0, total, w):
            index_start -= shift
            idx = [k % total for k in range(index_start, index_start + w)]
            idx_audio = [k % audio_all.shape[1] for k in range(index_start * 4, (index_start + w) * 4 - 3)]
            x = latents_all[:, idx]
            a = np.moveaxis(audio_all[:, idx_audio], 2, 1)      # [1, K, 4W - 3, ...]
            c = AvatarCond(ref_latents=np.concatenate([cond.ref_latents] * 2),
                           audio_feats=np.concatenate([np.zeros_like(a), a]),
                           face_mask=np.concatenate([np.asarray(cond.face_mask) * mask_scales[i]] * 2),
                           motion_exp=np.concatenate([cond.motion_exp] * 2),
                           motion_pose=np.concatenate([cond.motion_pose] * 2), fps=np.concatenate([cond.fps] * 2))
            t = np.full(2, sigmas[i] * 1000, np.float32)
            args = (c, np.concatenate([x, x]), t, states, mask, pooled)
            if not cached[i]:
                v, cache_out = dit(*args, use=False, cache=None, ret=True)
                cache_out = np.asarray(cache_out)
                if cache_tensor is None:
                    cache_tensor = {k: np.zeros((2, total, n, cfg.hidden_size), np.float32)
                                    for k, n in (("ref", hw), ("img", hw), ("txt", states.shape[1]))}
                cache_tensor["ref"][:, idx] = cache_out[:, None, :hw]
                cache_tensor["img"][:, idx] = cache_out[:, hw:hw + w * hw].reshape(2, w, hw, -1)
                cache_tensor["txt"][:, idx] = cache_out[:, None, hw + w * hw:]
            else:
                cache_out = cache_out.copy()
                cache_out[:, :hw] = cache_tensor["ref"][:, idx][:, 0]
                cache_out[:, hw:hw + w * hw] = cache_tensor["img"][:, idx].reshape(2, w * hw, -1)
                cache_out[:, hw + w * hw:] = cache_tensor["txt"][:, idx][:, 0]
                v = dit(*args, use=True, cache=cache_out, ret=False)
            v = np.asarray(v)
            v = v[:1] + scales[i] * (v[1:] - v[:1])
            x = x + v * (sigmas[i + 1] - sigmas[i])               # the scheduler reset per window
            for k in range(w):
                pred[:, (index_start + k) % total] += x[:, k]
                counter[(index_start + k) % total] += 1
        shift = (shift + plan.offset) % w
        latents_all = pred / counter[None, :, None, None, None]
    return latents_all


@pytest.mark.parametrize("characters", [1, 2])
def test_fused_loop_equals_the_official_loop(characters):
    """3 windows of the tiny model (3 latent frames, shift 1) over 20 steps, 4 of them cached."""
    p, cfg, params, request, text, negative, inputs = _setup(frames=25, seed=characters, characters=characters)
    fusion = PositionShift(3, 1, None, "float32")
    plan = plan_long_video(avatar.padded_audio_frames(inputs.frames, request.frames), fusion)
    assert plan.num_windows == 3 and avatar_cached_steps(request.steps).sum() == 4
    vae = random_params(p.vae, 0)
    cond = avatar._cond(inputs, avatar.encode_reference(p, vae, inputs.reference, request))
    noise = jax.random.normal(jax.random.key(3), (1, plan.total, 8, 8, 16))
    audio = avatar.padded_audio(inputs, plan)
    fn = jax.jit(avatar.denoise_fn(cfg, request, plan, fusion))
    got = np.asarray(fn(params, noise, audio, text, negative, cond))
    want = _official_loop(cfg, params, noise, audio, text, negative, cond, request, plan, AvatarGuidance())
    chex.assert_shape(got, (1, plan.total, 8, 8, 16))
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 1e-5, err


def test_long_audio_gives_one_continuous_video():
    """An audio of 3x the tiny window (27 frames, padded to 32: 4 windows of 3 on 11 latent frames) gives a video of the audio's length; at
    the window borders of the last step the latent changes from frame to frame no more than inside windows."""
    p, cfg, params, request, text, negative, inputs = _setup(frames=27, seed=4)
    vae = random_params(p.vae, 0)
    result = avatar.generate_avatar(p, params, vae, text, negative, request, inputs, progress=False)
    chex.assert_shape(result.video, (1, 27, 64, 64, 3))
    fusion = avatar.default_fusion(p, request)
    plan = plan_long_video(avatar.padded_audio_frames(27, request.frames), fusion)
    assert plan.num_windows >= 3 and result.latents.shape[1] == plan.kept == 9
    lat = result.latents[0]
    steps = np.linalg.norm((lat[1:] - lat[:-1]).reshape(lat.shape[0] - 1, -1), axis=1)   # frame k -> k + 1
    last_shift = ((request.steps - 1) * fusion.offset) % fusion.window
    starts = {int(s) % plan.total for s in plan.latent_indices(last_shift)[:, 0]}
    seams = [k for k in range(plan.kept - 1) if (k + 1) in starts]
    inside = [k for k in range(plan.kept - 1) if k not in seams]
    assert seams and inside
    assert steps[seams].max() <= steps[inside].max()
