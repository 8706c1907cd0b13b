"""The Audio Emotion Module (``conditioning.emotion``): a fresh module leaves the DiT bit-identical (gamma 0) while
gamma gets a gradient; the hook's addition equals gamma * softmax cross-attention written in numpy from the params
and reaches the video tokens only; no emotion image, no hooks; presets and param names."""

from __future__ import annotations

import functools

import chex
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import configs
from hcjax.conditioning import AvatarCond
from hcjax.conditioning.emotion import AvatarEmotion
from hcjax.models import HunyuanVideoDiT, abstract_params, random_params
from hcjax.models.extensions import DiTContext
from hcjax.models.params import init_params
from tests.jax_helpers import assert_every_param_has_logical_axes

THW = (3, 4, 6)   # latent grid
B = 2


@pytest.fixture(scope="module")
def setup():
    """``(cfg, base_cfg, params)``: tiny-avatar-emotion (one single block: less to compile) with random base params
    and a fresh emotion module."""
    cfg = configs.get("tiny-avatar-emotion").dit.replace(depth_single=1)
    base = configs.get("tiny-avatar").dit.replace(depth_single=1)
    params = dict(random_params(base, 0))
    fresh = cfg.mechanisms[-1].build(cfg, "emotion").init(jax.random.key(1), None, None)   # as the DiT's init
    params["emotion"] = nn.meta.unbox(fresh["params"])
    return cfg, base, params


def _inputs(cfg, seed=0):
    rng = np.random.default_rng(seed)
    audio = configs.get("tiny-avatar").mechanism("face_audio")
    t, h, w = THW
    f = lambda *s: rng.standard_normal(s).astype(np.float32)   # noqa: E731
    mask = np.zeros((B, 1, h, w), np.float32)
    mask[:, :, 1:3, 2:5] = 1.0
    cond = AvatarCond(ref_latents=np.repeat(f(B, 1, h, w, cfg.in_channels), t, axis=1),
                      audio_feats=f(B, 4 * (t - 1) + 1, audio.window, audio.layers, audio.channels), face_mask=mask,
                      emotion_latents=f(B, h, w, cfg.in_channels))
    args = (f(B, t, h, w, cfg.in_channels), np.array([900.0, 300.0], np.float32), f(B, 5, cfg.text_dim),
            np.ones((B, 5), np.int32), f(B, cfg.pooled_dim))
    return args, cond


@functools.cache
def _forward(cfg):
    return jax.jit(lambda p, args, cond: HunyuanVideoDiT(cfg).apply({"params": p}, *args, cond=cond))


def _with_gamma(params, values):
    emotion = {k: dict(v) for k, v in params["emotion"].items()}
    for j, g in enumerate(values):
        emotion[f"cross_attn_{j}"]["gamma"] = jnp.float32(g)
    return params | {"emotion": emotion}


def test_presets_and_param_names():
    assert_every_param_has_logical_axes(configs.get("tiny-avatar-emotion").dit)
    assert "emotion" not in abstract_params(configs.get("tiny-avatar").dit)
    full = configs.get("hunyuan-avatar-emotion").dit
    assert full.mechanisms[:-1] == configs.get("hunyuan-avatar").dit.mechanisms   # emotion hooks run last
    mech = full.mechanisms[-1]
    assert isinstance(mech, AvatarEmotion) and mech.double_blocks == tuple(range(1, 20, 2)) and AvatarEmotion.addable
    shapes = jax.eval_shape(lambda: init_params(configs.get("tiny-avatar-emotion").dit))["emotion"]
    assert set(shapes) == {"fc", "cross_attn_0", "cross_attn_1"}
    block = jax.tree.map(lambda x: x.shape, shapes["cross_attn_0"])
    assert block["to_q"]["kernel"] == (64, 32) and block["to_kv"]["kernel"] == (64, 64)
    assert block["to_out"]["kernel"] == (32, 64) and block["gamma"] == ()


def test_fresh_module_changes_nothing_and_gamma_learns(setup):
    cfg, base, params = setup
    args, cond = _inputs(cfg)
    plain = AvatarCond(**{**cond.__dict__, "emotion_latents": None})
    want = np.asarray(_forward(base)({k: v for k, v in params.items() if k != "emotion"}, args, plain))
    got = np.asarray(_forward(cfg)(params, args, cond))
    chex.assert_shape(got, (B, *THW, cfg.out_channels))
    np.testing.assert_array_equal(got, want)
    # with gamma != 0 the emotion image matters
    live = _with_gamma(params, (0.7, -0.4))
    other = AvatarCond(**{**cond.__dict__, "emotion_latents": cond.emotion_latents[::-1].copy()})
    changed = np.asarray(_forward(cfg)(live, args, other))
    assert np.abs(changed - np.asarray(_forward(cfg)(live, args, cond))).max() > 1e-4


def _np_layer_norm(x, p, eps=1e-6):
    x = x.astype(np.float64)
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * p["scale"] + p["bias"]


def _np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_addition(block, tokens, video, heads):
    """gamma * to_out(softmax(q k^T / sqrt(e)) v), per head, in float64."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), block)
    q = _np_dense(_np_layer_norm(video, p["norm_q"]), p["to_q"])
    k, v = np.split(_np_dense(_np_layer_norm(tokens, p["norm_kv"]), p["to_kv"]), 2, axis=-1)
    q, k, v = (einops.rearrange(x, "b l (h e) -> b h l e", h=heads) for x in (q, k, v))
    logits = q @ einops.rearrange(k, "b h l e -> b h e l") / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = einops.rearrange(weights @ v, "b h l e -> b l (h e)")
    return p["gamma"] * _np_dense(out, p["to_out"])


def test_hook_adds_gamma_times_cross_attention_to_the_video_tokens(setup):
    cfg, _, params = setup
    live = _with_gamma(params, (0.7, -0.4))
    mech = configs.get("tiny-avatar-emotion").mechanism("emotion")
    _, cond = _inputs(cfg, seed=3)
    t, h, w = THW
    grid = (t, h // 2, w // 2)
    embed = params["img_in"]["proj"]

    def patch_embed(x):   # the shared img_in, in numpy: [B, 1, h, w, C] -> [B, h' w', D]
        patches = einops.rearrange(np.asarray(x, np.float64), "b t (h ph) (w pw) c -> b (t h w) (ph pw c)",
                                   ph=2, pw=2)
        return _np_dense(patches, {"kernel": np.asarray(embed["kernel"]).reshape(-1, cfg.hidden_size),
                                   "bias": embed["bias"]})

    ctx = DiTContext(grid=grid, patch_embed=lambda x: jnp.asarray(patch_embed(x), jnp.float32), timestep=None,
                     vec=jnp.zeros((B, cfg.hidden_size)), embed_timestep=None, pooled_vec=None, dtype=jnp.float32)
    ext = mech.build(cfg, "emotion").apply({"params": live["emotion"]}, cond, ctx)
    assert [i for i, _ in ext.double_hooks] == list(mech.double_blocks)
    rng = np.random.default_rng(4)
    n_ref, n_video = h // 2 * (w // 2), int(np.prod(grid))
    img = rng.standard_normal((B, n_ref + n_video, cfg.hidden_size)).astype(np.float32)
    txt = rng.standard_normal((B, 5, cfg.hidden_size)).astype(np.float32)
    tokens = _np_dense(patch_embed(cond.emotion_latents[:, None]), live["emotion"]["fc"])   # FC(Encoder(E_ref))
    chex.assert_shape(tokens, (B, n_ref, cfg.hidden_size))
    for j, (_, hook) in enumerate(ext.double_hooks):
        new_img, new_txt = jax.tree.map(np.asarray, hook((jnp.asarray(img), jnp.asarray(txt))))
        np.testing.assert_array_equal(new_txt, txt)
        np.testing.assert_array_equal(new_img[:, :n_ref], img[:, :n_ref])            # reference tokens: nothing
        want = _np_addition(live["emotion"][f"cross_attn_{j}"], tokens, img[:, n_ref:], mech.hidden // mech.head_dim)
        np.testing.assert_allclose(new_img[:, n_ref:] - img[:, n_ref:], want, rtol=1e-4, atol=2e-5)
        assert np.abs(want).max() > 1e-2
    # a fresh module (gamma 0) adds exactly nothing, yet gamma gets a gradient, the other params none yet
    fresh = mech.build(cfg, "emotion")

    def hook_loss(emotion):
        hook = fresh.apply({"params": emotion}, cond, ctx).double_hooks[0][1]
        return jnp.sum(jnp.square(hook((jnp.asarray(img), jnp.asarray(txt)))[0]))

    ext = fresh.apply({"params": params["emotion"]}, cond, ctx)
    np.testing.assert_array_equal(np.asarray(ext.double_hooks[0][1]((jnp.asarray(img), txt))[0]), img)
    assert np.all(np.asarray(params["emotion"]["cross_attn_0"]["to_out"]["kernel"]) != 0)   # not zero-initialised
    grads = jax.grad(hook_loss)(params["emotion"])["cross_attn_0"]
    assert abs(float(grads["gamma"])) > 0
    assert all(not np.asarray(x).any() for k, v in grads.items() if k != "gamma" for x in jax.tree.leaves(v))
    # no emotion image: no hooks
    assert fresh.apply({"params": live["emotion"]}, AvatarCond(**{**cond.__dict__, "emotion_latents": None}),
                       ctx).double_hooks == ()


def test_bad_emotion_latents_are_named(setup):
    cfg, _, params = setup
    args, cond = _inputs(cfg)
    bad = AvatarCond(**{**cond.__dict__, "emotion_latents": cond.emotion_latents[:, :3]})
    with pytest.raises(ValueError, match=r"emotion_latents must be \[B=2, h, w, 16\].*got \(2, 3, 6, 16\)"):
        _forward(cfg)(params, args, bad)
