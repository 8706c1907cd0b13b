"""HunyuanCustom's DiT mechanisms against independent expectations and a PyTorch statement of the official
forward (``tests/custom_reference.py``): reference-token positions, audio alignment, the editing addition,
whole-model fp32 parity (image, audio, editing, step cache), and the image-only model recovered exactly."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.conditioning import CustomCond
from hcjax.conditioning.audio import align_to_latents, latent_frame_sources
from hcjax.conditioning.editing import Editing
from hcjax.conditioning.identity import reference_positions
from hcjax.models import HunyuanVideoDiT, random_params
from hcjax.models.extensions import DiTContext
from hcjax.nn.rope import grid_positions
from tests.custom_reference import TorchCustomDiT, official_rope_grid
from tests.torch_reference import rel_l2, to_channels_last

TOL = 1e-5
THW = (3, 6, 10)   # latent grid of the parity runs


def test_reference_positions_one_subject_match_the_official_rule():
    t, h, w = 4, 3, 5
    ours = np.concatenate([reference_positions((t, h, w), 1), grid_positions(t, h, w)])
    np.testing.assert_array_equal(ours, official_rope_grid(t, h, w).T)


def test_reference_positions_of_three_subjects():
    """Subject k at time -k, each over the full H' x W' grid with widths shifted by W', in subject order."""
    h, w = 2, 3
    want = [(-k, i, w + j) for k in (1, 2, 3) for i in range(h) for j in range(w)]
    np.testing.assert_array_equal(reference_positions((5, h, w), 3), np.array(want))


def test_audio_alignment_of_129_frames():
    src = latent_frame_sources(129)
    chex.assert_shape(src, (33, 4))
    np.testing.assert_array_equal(src[0], [0, 0, 0, 0])
    for j in range(1, 33):
        np.testing.assert_array_equal(src[j], [4 * j - 3, 4 * j - 2, 4 * j - 1, 4 * j])
    # the tokens of frame f tagged with f land where latent_frame_sources says, 4 tokens per frame in order
    tokens = jnp.broadcast_to(jnp.arange(129, dtype=jnp.float32)[None, :, None, None], (1, 129, 4, 2))
    aligned = np.asarray(align_to_latents(tokens))
    chex.assert_shape(aligned, (1, 33, 16, 2))
    np.testing.assert_array_equal(aligned[0, :, :, 0], np.repeat(src, 4, axis=1))
    with pytest.raises(ValueError, match="4k\\+1"):
        latent_frame_sources(128)


def test_editing_adds_bg_proj_of_bg_in():
    """The mechanism's token addition equals patchify -> conv kernel -> bg_proj, computed here in numpy."""
    cfg = configs.get("tiny-custom-editing").dit
    params = random_params(cfg, seed=3)["editing"]
    rng = np.random.default_rng(0)
    bg = rng.standard_normal((2, 2, 4, 6, 2 * cfg.in_channels)).astype(np.float32)
    ctx = DiTContext(grid=(2, 2, 3), patch_embed=None, timestep=None, vec=None, embed_timestep=None,
                     pooled_vec=None, dtype=jnp.float32)
    ext = Editing().build(cfg, "editing").apply({"params": params}, CustomCond(bg_latents=bg), ctx)
    kernel = np.asarray(params["bg_in"]["proj"]["kernel"])[0]                      # [2, 2, 2C, D]
    patches = bg.reshape(2, 2, 2, 2, 3, 2, 2 * cfg.in_channels).transpose(0, 1, 2, 4, 3, 5, 6)  # b t h w ph pw c
    conv = np.einsum("bthwpqc,pqcd->bthwd", patches, kernel) + np.asarray(params["bg_in"]["proj"]["bias"])
    want = conv.reshape(2, 12, -1) @ np.asarray(params["bg_proj"]["kernel"]) + np.asarray(params["bg_proj"]["bias"])
    np.testing.assert_allclose(np.asarray(ext.token_add), want, rtol=1e-5, atol=1e-5)


def _torch_inputs(cfg, subjects=1, audio_channels=None, editing=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    t, h, w = THW
    inp = dict(x=torch.randn(2, cfg.in_channels, t, h, w, generator=g), t=torch.tensor([937.5, 250.0]),
               txt=torch.randn(2, 9, cfg.text_dim, generator=g),
               mask=torch.tensor([[1] * 6 + [0, 0, 1], [1] * 3 + [0] * 6]),   # positional, Custom's kind
               pooled=torch.randn(2, cfg.pooled_dim, generator=g),
               ref=torch.randn(2, cfg.in_channels, subjects, h, w, generator=g))
    if audio_channels:
        inp["audio"] = torch.randn(2, 4 * (t - 1) + 1, 10, 5, audio_channels, generator=g)
    if editing:
        inp["bg"] = torch.randn(2, 2 * cfg.in_channels, t, h, w, generator=g)
    return inp


def _positions(subjects):
    t, h, w = THW
    grid = (t, h // 2, w // 2)
    return np.concatenate([reference_positions(grid, subjects), grid_positions(*grid)]).T


def _run_torch(model, inp, subjects=1, strength=1.0, is_cache=False):
    out = model(inp["x"], inp["t"], inp["txt"], inp["mask"], inp["pooled"], inp["ref"], _positions(subjects),
                bg=inp.get("bg"), audio=inp.get("audio"), strength=strength, is_cache=is_cache)
    return to_channels_last(out)


def _cond(inp, strength=1.0):
    ref = inp["ref"].permute(0, 2, 3, 4, 1).numpy()
    return CustomCond(ref_latents=ref, bg_latents=None if "bg" not in inp else to_channels_last(inp["bg"]),
                      audio_feats=None if "audio" not in inp else inp["audio"].numpy(), audio_strength=strength)


def _run_jax(cfg, params, inp, cond, **kw):
    fn = jax.jit(lambda p, c, **k: HunyuanVideoDiT(cfg).apply({"params": p}, to_channels_last(inp["x"]),
                 inp["t"].numpy(), inp["txt"].numpy(), inp["mask"].numpy(), inp["pooled"].numpy(), None, c, **k),
                 static_argnames=("return_cache",))
    out = fn(params, cond, **kw)
    return jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("preset,subjects", [("tiny-custom", 1), ("tiny-custom", 2), ("tiny-custom-audio", 1),
                                             ("tiny-custom-editing", 1)])
def test_whole_model_parity_with_the_official_forward(preset, subjects):
    p = configs.get(preset)
    cfg, audio = p.dit, p.mechanism("audio")
    ref = TorchCustomDiT(cfg, seed=2, editing=p.mechanism("editing") is not None, audio=audio)
    params = convert.dit_from_torch(ref.official_state_dict(), cfg, source="official")
    inp = _torch_inputs(cfg, subjects, audio and audio.channels, p.mechanism("editing") is not None)
    want = _run_torch(ref, inp, subjects, strength=0.8)
    got = _run_jax(cfg, params, inp, _cond(inp, 0.8))
    chex.assert_shape(got, (2, *THW, cfg.out_channels))
    assert rel_l2(got, want) < TOL


def test_step_cache_parity_with_the_official_cached_step():
    """A full step stores the last single block's input; a cached step at another timestep reruns only that
    block and the final layer, as the official ``is_cache`` path does."""
    p = configs.get("tiny-custom-audio")
    cfg = p.dit.replace(depth_single=3)
    ref = TorchCustomDiT(cfg, seed=4, audio=p.mechanism("audio"))
    params = convert.dit_from_torch(ref.official_state_dict(), cfg, source="official")
    inp = _torch_inputs(cfg, 1, p.mechanism("audio").channels, seed=5)
    full_want = _run_torch(ref, inp)
    full_got, cache = _run_jax(cfg, params, inp, _cond(inp), return_cache=True)
    assert rel_l2(full_got, full_want) < TOL
    inp["t"] = torch.tensor([700.0, 120.0])
    cached_want = _run_torch(ref, inp, is_cache=True)
    cached_got = _run_jax(cfg, params, inp, _cond(inp), step_cache=cache)
    assert rel_l2(cached_got, cached_want) < TOL
    assert rel_l2(cached_got, _run_jax(cfg, params, inp, _cond(inp))) > 1e-3   # the cache really changes it


def test_zero_audio_strength_and_no_background_recover_the_image_only_model():
    image = configs.get("tiny-custom").dit
    inp = _torch_inputs(image, 1, 16, editing=True, seed=8)
    results = {}
    backbone = random_params(image, seed=9)
    for name in ("tiny-custom", "tiny-custom-audio", "tiny-custom-editing"):
        cfg = configs.get(name).dit
        extra = {k: v for k, v in random_params(cfg, seed=10).items() if k not in backbone}
        params = {**backbone, **extra}   # the same backbone, plus the variant's own params
        cond = _cond(inp, strength=0.0)
        if name == "tiny-custom":
            cond = CustomCond(ref_latents=cond.ref_latents)
        elif name == "tiny-custom-editing":
            cond = CustomCond(ref_latents=cond.ref_latents, bg_latents=None)
        else:
            cond = CustomCond(ref_latents=cond.ref_latents, audio_feats=cond.audio_feats, audio_strength=0.0)
        results[name] = _run_jax(cfg, params, inp, cond)
    np.testing.assert_array_equal(results["tiny-custom-audio"], results["tiny-custom"])
    np.testing.assert_array_equal(results["tiny-custom-editing"], results["tiny-custom"])
    # and the conditions do act when present
    audio_cfg = configs.get("tiny-custom-audio").dit
    params = {**backbone, "audio": random_params(audio_cfg, seed=10)["audio"]}
    on = _run_jax(audio_cfg, params, inp, _cond(inp, strength=1.0))
    assert rel_l2(on, results["tiny-custom"]) > 1e-3


def test_bad_conditions_are_named():
    p = configs.get("tiny-custom-audio")
    params = random_params(p.dit, seed=0)
    inp = _torch_inputs(p.dit, 1, 16)
    cond = _cond(inp)
    with pytest.raises(ValueError, match="video's latent height and width"):
        _run_jax(p.dit, params, inp, CustomCond(ref_latents=cond.ref_latents[:, :, :4], audio_feats=cond.audio_feats))
    with pytest.raises(ValueError, match="audio_feats must be"):
        _run_jax(p.dit, params, inp, CustomCond(ref_latents=cond.ref_latents, audio_feats=cond.audio_feats[:, :5]))
