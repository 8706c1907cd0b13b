"""HunyuanVideo-Avatar's DiT mechanisms: whole-model fp32 parity with a PyTorch statement of the official forward
(``tests/avatar_reference.py``, full and cached steps, one- and T-frame face masks), and independent expectations:
the reference frame's positions, the face mask confining the audio's effect to the face tokens, two characters
each driven only by their own audio, the motion / fps defaults."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.conditioning import AvatarCond
from hcjax.conditioning.avatar import reference_frame_positions
from hcjax.conditioning.avatar_audio import mask_to_tokens, nearest_indices
from hcjax.models import HunyuanVideoDiT
from hcjax.nn.rope import grid_positions
from tests.avatar_reference import TorchAvatarDiT, official_rope_grid
from tests.torch_reference import rel_l2, to_channels_last

TOL = 1e-5
THW = (3, 6, 10)   # latent grid of the parity runs
PRESET = "tiny-avatar"


def test_reference_frame_positions_match_the_official_timecat_grid():
    t, h, w = 4, 3, 5
    ours = np.concatenate([reference_frame_positions((t, h, w)), grid_positions(t, h, w)])
    np.testing.assert_array_equal(ours, official_rope_grid(t, h, w).T)


def test_mask_nearest_resize_matches_torch():
    rng = np.random.default_rng(0)
    for shape, grid in [((1, 1, 12, 20), (3, 6, 10)), ((1, 3, 12, 20), (3, 6, 10)), ((2, 5, 7, 9), (3, 4, 5))]:
        mask = rng.random(shape).astype(np.float32)
        src = torch.from_numpy(mask)[:, None]
        if shape[1] == 1:
            src = src.repeat(1, 1, grid[0], 1, 1)
        want = torch.nn.functional.interpolate(src, size=list(grid), mode="nearest").reshape(shape[0], -1)
        np.testing.assert_array_equal(np.asarray(mask_to_tokens(jnp.asarray(mask), grid)), want.numpy())
    np.testing.assert_array_equal(nearest_indices(12, 6), [0, 2, 4, 6, 8, 10])   # latent -> token grid: 2i


def _inputs(cfg, audio, seed=1, mask_frames=1):
    g = torch.Generator().manual_seed(seed)
    t, h, w = THW
    face = torch.zeros(2, 1, mask_frames, h, w)
    face[0, :, :, 1:4, 2:7] = 1.0
    face[1, :, :, 2:6, 0:5] = 0.5
    for k in range(1, mask_frames):                 # a face that moves from frame to frame
        face[:, :, k] = torch.roll(face[:, :, 0], shifts=2 * k, dims=-1)
    return dict(x=torch.randn(2, cfg.in_channels, t, h, w, generator=g), t=torch.tensor([937.5, 250.0]),
                txt=torch.randn(2, 9, cfg.text_dim, generator=g),
                mask=torch.tensor([[1] * 6 + [0, 0, 1], [1] * 3 + [0] * 6]),   # positional, as LLaVA's
                pooled=torch.randn(2, cfg.pooled_dim, generator=g),
                ref=torch.randn(2, cfg.in_channels, t, h, w, generator=g),
                audio=torch.randn(2, 4 * (t - 1) + 1, audio.window, audio.layers, audio.channels, generator=g),
                face=face, exp=torch.tensor([[30, 30, 30, 30], [10, 20, 30, 40]]),
                pose=torch.tensor([[25, 25, 25, 25], [5, 15, 25, 35]]), fps=torch.tensor([25.0, 12.5]))


def _run_torch(model, inp, is_cache=False):
    out = model(inp["x"], inp["t"], inp["txt"], inp["mask"], inp["pooled"], inp["ref"], inp["audio"], inp["face"],
                inp["exp"], inp["pose"], inp["fps"], is_cache=is_cache)
    return to_channels_last(out)


def _cond(inp, **changes):
    cond = AvatarCond(ref_latents=to_channels_last(inp["ref"]), audio_feats=inp["audio"].numpy(),
                      face_mask=inp["face"][:, 0].numpy(), motion_exp=inp["exp"].numpy(),
                      motion_pose=inp["pose"].numpy(), fps=inp["fps"].numpy())
    for k, v in changes.items():
        setattr(cond, k, v)
    return cond


def _run_jax(cfg, params, inp, cond, **kw):
    fn = jax.jit(lambda p, c, **k: HunyuanVideoDiT(cfg).apply({"params": p}, to_channels_last(inp["x"]),
                 inp["t"].numpy(), inp["txt"].numpy(), inp["mask"].numpy(), inp["pooled"].numpy(), None, c, **k),
                 static_argnames=("return_cache",))
    return jax.tree.map(np.asarray, fn(params, cond, **kw))


@pytest.fixture(scope="module")
def model():
    p = configs.get(PRESET)
    cfg = p.dit.replace(depth_single=3)
    ref = TorchAvatarDiT(cfg, p.mechanism("face_audio"), seed=2)
    return cfg, ref, convert.dit_from_torch(ref.official_state_dict(), cfg, source="official")


@pytest.mark.parametrize("mask_frames", [1, THW[0]])
def test_whole_model_parity_with_the_official_forward(model, mask_frames):
    cfg, ref, params = model
    inp = _inputs(cfg, configs.get(PRESET).mechanism("face_audio"), mask_frames=mask_frames)
    got = _run_jax(cfg, params, inp, _cond(inp))
    chex.assert_shape(got, (2, *THW, cfg.out_channels))
    assert rel_l2(got, _run_torch(ref, inp)) < TOL


def test_step_cache_parity_with_the_official_cached_step(model):
    cfg, ref, params = model
    inp = _inputs(cfg, configs.get(PRESET).mechanism("face_audio"), seed=5)
    full_got, cache = _run_jax(cfg, params, inp, _cond(inp), return_cache=True)
    assert rel_l2(full_got, _run_torch(ref, inp)) < TOL
    inp["t"] = torch.tensor([700.0, 120.0])
    cached_got = _run_jax(cfg, params, inp, _cond(inp), step_cache=cache)
    assert rel_l2(cached_got, _run_torch(ref, inp, is_cache=True)) < TOL


def test_face_mask_confines_the_audio_to_the_face_tokens(model):
    """At each adapter the addition to the video tokens is zero outside the face, non-zero inside, half as large
    where the face mask is 0.5; reference tokens and text get nothing."""
    cfg, _, params = model
    audio = configs.get(PRESET).mechanism("face_audio")
    inp = _inputs(cfg, audio, seed=7)
    mod = audio.build(cfg, "face_audio")
    t, h, w = THW
    grid = (t, h // 2, w // 2)
    from hcjax.models.extensions import DiTContext

    ctx = DiTContext(grid=grid, patch_embed=None, timestep=None, vec=None, embed_timestep=None, pooled_vec=None,
                     dtype=jnp.float32)
    ext = mod.apply({"params": params["face_audio"]}, _cond(inp), ctx)
    rng = np.random.default_rng(0)
    n_video, n_ref = int(np.prod(grid)), 4
    img = jnp.asarray(rng.standard_normal((2, n_ref + n_video, cfg.hidden_size)), jnp.float32)
    txt = jnp.zeros((2, 5, cfg.hidden_size))
    for block, hook in ext.double_hooks:
        new, new_txt = hook((img, txt))
        delta = np.asarray(new - img)
        np.testing.assert_array_equal(np.asarray(new_txt), np.asarray(txt))
        np.testing.assert_array_equal(delta[:, :n_ref], 0.0)                     # reference tokens: nothing
        face = np.asarray(mask_to_tokens(jnp.asarray(inp["face"][:, 0].numpy()), grid))   # [2, n_video]
        video = delta[:, n_ref:]
        assert np.all(video[face == 0] == 0.0)                                   # outside the face: nothing
        assert np.all(np.abs(video[face > 0]).sum(-1) > 0)                       # inside: the audio acts
        # a half-strength face gets exactly half of the full-strength addition
        full = AvatarCond(**{**_cond(inp).__dict__, "face_mask": (inp["face"][:, 0].numpy() > 0).astype(np.float32)})
        ext_full = mod.apply({"params": params["face_audio"]}, full, ctx)
        full_delta = np.asarray(dict(ext_full.double_hooks)[block]((img, txt))[0] - img)[:, n_ref:]
        np.testing.assert_allclose(video[1][face[1] > 0], 0.5 * full_delta[1][face[1] > 0], rtol=1e-5, atol=1e-6)


def test_two_characters_each_driven_by_their_own_audio(model):
    """Two disjoint faces with audios (a, b): the tokens of face 1 get exactly what a alone gives them, face 2 what
    b alone gives; swapping the audios swaps the faces' inputs; tokens outside both faces get nothing."""
    cfg, _, params = model
    audio = configs.get(PRESET).mechanism("face_audio")
    inp = _inputs(cfg, audio, seed=9)
    t, h, w = THW
    grid = (t, h // 2, w // 2)
    from hcjax.models.extensions import DiTContext

    ctx = DiTContext(grid=grid, patch_embed=None, timestep=None, vec=None, embed_timestep=None, pooled_vec=None,
                     dtype=jnp.float32)
    mod = audio.build(cfg, "face_audio")
    faces = np.zeros((2, 2, 1, h, w), np.float32)
    faces[:, 0, :, :, :4] = 1.0         # character 1: the left columns
    faces[:, 1, :, :, 6:] = 1.0         # character 2: the right columns
    a, b = inp["audio"].numpy(), np.flip(inp["audio"].numpy(), axis=1).copy()
    rng = np.random.default_rng(1)
    img = jnp.asarray(rng.standard_normal((2, int(np.prod(grid)), cfg.hidden_size)), jnp.float32)
    txt = jnp.zeros((2, 3, cfg.hidden_size))

    def delta(feats, masks):
        cond = AvatarCond(audio_feats=feats, face_mask=masks)
        ext = mod.apply({"params": params["face_audio"]}, cond, ctx)
        return np.asarray(ext.double_hooks[0][1]((img, txt))[0] - img)

    tok = [np.asarray(mask_to_tokens(jnp.asarray(faces[:, k]), grid))[0] > 0 for k in range(2)]
    both = delta(np.stack([a, b], 1), faces)
    swapped = delta(np.stack([b, a], 1), faces)
    alone = {name: [delta(x, faces[:, k]) for k in range(2)] for name, x in (("a", a), ("b", b))}
    np.testing.assert_allclose(both[:, tok[0]], alone["a"][0][:, tok[0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both[:, tok[1]], alone["b"][1][:, tok[1]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(swapped[:, tok[0]], alone["b"][0][:, tok[0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(swapped[:, tok[1]], alone["a"][1][:, tok[1]], rtol=1e-6, atol=1e-7)
    assert not np.allclose(both[:, tok[0]], swapped[:, tok[0]])
    outside = ~(tok[0] | tok[1])
    np.testing.assert_array_equal(both[:, outside], 0.0)


def test_motion_defaults_are_the_official_constants(model):
    cfg, _, params = model
    inp = _inputs(cfg, configs.get(PRESET).mechanism("face_audio"), seed=3)
    inp["exp"], inp["pose"], inp["fps"] = (torch.full((2, 4), 30), torch.full((2, 4), 25),
                                           torch.tensor([25.0, 25.0]))
    given = _run_jax(cfg, params, inp, _cond(inp))
    default = _run_jax(cfg, params, inp, _cond(inp, motion_exp=None, motion_pose=None, fps=None))
    np.testing.assert_array_equal(given, default)


def test_bad_conditions_are_named(model):
    cfg, _, params = model
    inp = _inputs(cfg, configs.get(PRESET).mechanism("face_audio"))
    cond = _cond(inp)
    with pytest.raises(ValueError, match="ref_latents must be"):
        _run_jax(cfg, params, inp, _cond(inp, ref_latents=cond.ref_latents[:, :1]))
    with pytest.raises(ValueError, match="audio_feats must be"):
        _run_jax(cfg, params, inp, _cond(inp, audio_feats=cond.audio_feats[:, :5]))
    with pytest.raises(ValueError, match="face_mask must be"):
        _run_jax(cfg, params, inp, _cond(inp, face_mask=cond.face_mask[:, None]))
    with pytest.raises(ValueError, match="motion_exp must be"):
        _run_jax(cfg, params, inp, _cond(inp, motion_exp=np.zeros((2, 3))))
