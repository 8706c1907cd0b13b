"""HuMo's mechanisms on the HunyuanVideo DiT: fp32 parity with a PyTorch statement of HuMo's layout (references
concatenated after the video latents, ``tests/humo_reference.py``), and independent expectations: the appended
frames' positions, per-frame audio attention, "no audio" as zero windows, the mask head's sown logits."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.conditioning import HumoCond
from hcjax.conditioning.humo import appended_positions
from hcjax.conditioning.mask_predictor import predicted_mask
from hcjax.models import HunyuanVideoDiT
from hcjax.models.params import init_params
from tests.humo_reference import TorchHumoDiT
from tests.torch_reference import rel_l2, to_channels_last

TOL = 1e-5
THW = (3, 6, 10)


@pytest.fixture(scope="module")
def model():
    p = configs.get("tiny-humo")
    cfg = p.dit.replace(mechanisms=p.dit.mechanisms[:2])        # the reference and audio mechanisms
    ref = TorchHumoDiT(cfg, p.mechanism("audio"), seed=3)
    return cfg, ref, convert.dit_from_torch(ref.official_state_dict(), cfg, source="official")


def _inputs(cfg, n_ref, seed=1):
    g = torch.Generator().manual_seed(seed)
    t, h, w = THW
    audio = configs.get("tiny-humo").mechanism("audio")
    return dict(x=torch.randn(2, cfg.in_channels, t, h, w, generator=g), t=torch.tensor([981.0, 300.0]),
                txt=torch.randn(2, 7, cfg.text_dim, generator=g),
                mask=torch.tensor([[1] * 7, [1] * 4 + [0] * 3]),
                pooled=torch.randn(2, cfg.pooled_dim, generator=g),
                ref=torch.randn(2, cfg.in_channels, n_ref, h, w, generator=g),
                audio=torch.randn(2, t, audio.window, audio.groups, audio.channels, generator=g))


@functools.lru_cache(maxsize=None)
def _forward(cfg, mutable: bool):
    model = HunyuanVideoDiT(cfg)
    kw = dict(mutable=["predictions"]) if mutable else {}
    return jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kw))


def _run_jax(cfg, params, inp, cond, mutable=False):
    args = (to_channels_last(inp["x"]), inp["t"].numpy(), inp["txt"].numpy(), inp["mask"].numpy(),
            inp["pooled"].numpy(), None, cond)
    out = _forward(cfg, mutable)(params, *args)
    return out if mutable else np.asarray(out)


def _cond(inp, **changes):
    kw = dict(ref_latents=np.moveaxis(inp["ref"].numpy(), 1, -1), audio_feats=inp["audio"].numpy())
    return HumoCond(**{**kw, **changes})


@pytest.mark.parametrize("n_ref", [1, 2])
def test_parity_with_references_appended_after_the_video(model, n_ref):
    cfg, ref, params = model
    inp = _inputs(cfg, n_ref)
    got = _run_jax(cfg, params, inp, _cond(inp))
    chex.assert_shape(got, (2, *THW, cfg.out_channels))
    want = to_channels_last(ref(inp["x"], inp["t"], inp["txt"], inp["mask"], inp["pooled"], inp["ref"],
                                inp["audio"]))
    assert rel_l2(got, want) < TOL


def test_appended_positions_follow_the_video_in_time():
    pos = appended_positions((4, 2, 3), 2)
    chex.assert_shape(pos, (12, 3))
    np.testing.assert_array_equal(pos[:6, 0], 4)
    np.testing.assert_array_equal(pos[6:, 0], 5)
    np.testing.assert_array_equal(pos[:6, 1:], [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])


def test_reference_windows_default_to_zeros_and_audio_acts_per_frame(model):
    """Windows for the video frames only equal windows with the references' zero windows appended; non-zero
    reference windows change the output; changing one latent frame's window changes mostly that frame (other
    frames see it only through the following self-attention blocks, so check at the last double block's hook)."""
    cfg, _, params = model
    inp = _inputs(cfg, 1, seed=4)
    base = _run_jax(cfg, params, inp, _cond(inp))
    padded = np.concatenate([inp["audio"].numpy(), np.zeros((2, 1, *inp["audio"].shape[2:]), np.float32)], 1)
    np.testing.assert_array_equal(_run_jax(cfg, params, inp, _cond(inp, audio_feats=padded)), base)
    noisy = padded.copy()
    noisy[:, -1] = 1.0
    assert rel_l2(_run_jax(cfg, params, inp, _cond(inp, audio_feats=noisy)), base) > 1e-3

    mech = configs.get("tiny-humo").mechanism("audio")
    from hcjax.models.extensions import DiTContext

    t, h, w = THW
    grid = (t, h // 2, w // 2)
    ctx = DiTContext(grid=grid, patch_embed=None, timestep=None, vec=None, embed_timestep=None, pooled_vec=None,
                     dtype=jnp.float32)
    mod = mech.build(cfg, "audio")
    hw = grid[1] * grid[2]
    img = jnp.asarray(np.random.default_rng(0).standard_normal((2, (1 + t) * hw, cfg.hidden_size)), jnp.float32)
    txt = jnp.zeros((2, 3, cfg.hidden_size))

    def delta(feats):
        ext = mod.apply({"params": params["audio"]}, _cond(inp, audio_feats=feats), ctx)
        return np.asarray(ext.double_hooks[-1][1]((img, txt))[0] - img)

    changed = inp["audio"].numpy().copy()
    changed[:, 1] += 3.0                                     # latent frame 1's window only
    diff = np.abs(delta(changed) - delta(inp["audio"].numpy())).reshape(2, 1 + t, hw, -1)
    assert np.all(diff[:, 2].sum(-1) > 0)                    # token frame 2 = latent frame 1 (after 1 reference)
    np.testing.assert_array_equal(np.delete(diff, 2, axis=1), 0.0)


def test_mask_head_sows_logits_and_leaves_the_velocity_unchanged(model):
    cfg_full = configs.get("tiny-humo").dit
    params = init_params(cfg_full, 0)
    inp = _inputs(cfg_full, 1, seed=2)
    cond = _cond(inp)
    v, variables = _run_jax(cfg_full, params, inp, cond, mutable=True)
    logits = predicted_mask(variables["predictions"])
    chex.assert_shape(logits, (2, *THW))
    chex.assert_tree_all_finite(logits)
    np.testing.assert_array_equal(np.asarray(v), _run_jax(cfg_full, params, inp, cond))
    # the head reads the video tokens: another video gives other logits
    inp2 = dict(inp, x=inp["x"].flip(-1))
    _, other = _run_jax(cfg_full, params, inp2, cond, mutable=True)
    assert not np.allclose(np.asarray(predicted_mask(other["predictions"])), np.asarray(logits))
    with pytest.raises(ValueError, match="mutable"):
        predicted_mask({})


def test_bad_conditions_are_named(model):
    cfg, _, params = model
    inp = _inputs(cfg, 1)
    cond = _cond(inp)
    with pytest.raises(ValueError, match="ref_latents must be"):
        _run_jax(cfg, params, inp, _cond(inp, ref_latents=cond.ref_latents[:, :, :4]))
    with pytest.raises(ValueError, match="audio_feats must be"):
        _run_jax(cfg, params, inp, _cond(inp, audio_feats=cond.audio_feats[:, :2]))
