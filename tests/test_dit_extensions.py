"""The DiT's extension points, exercised by a toy mechanism, and the execution switches (scan, remat)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, abstract_params, random_params
from hcjax.models.extensions import Extension, segments
from hcjax.nn.rope import grid_positions
from tests.jax_helpers import random_inputs

BASE = configs.get("tiny").dit


class ToyModule(nn.Module):
    """Turns entries of a cond dict into extension contributions."""

    cfg: configs.DiTConfig
    double_hooks: tuple
    single_hooks: tuple

    @nn.compact
    def __call__(self, cond, ctx):
        self.param("weight", nn.initializers.ones, (3,))  # a mechanism owns params even when unused
        if cond is None:
            return Extension()
        ext = dict(double_hooks=self.double_hooks, single_hooks=self.single_hooks)
        if "prefix_latents" in cond:
            prefix = cond["prefix_latents"]
            grid = [n // p for n, p in zip(prefix.shape[1:4], self.cfg.patch_size)]
            ext["prefix_tokens"] = ctx.patch_embed(prefix)
            ext["prefix_positions"] = jnp.asarray(grid_positions(*grid)) + jnp.asarray(cond["prefix_offset"])
        if "latent_delta" in cond:  # the linear part of img_in applied to a latent offset
            d = cond["latent_delta"]
            ext["token_add"] = ctx.patch_embed(d) - ctx.patch_embed(jnp.zeros_like(d))
        if "vec_add" in cond:
            ext["vec_add"] = cond["vec_add"]
        return Extension(**ext)


@dataclasses.dataclass(frozen=True)
class ToyMechanism:
    name: str = "toy"
    double_hooks: tuple[tuple[int, Callable], ...] = ()
    single_hooks: tuple[tuple[int, Callable], ...] = ()

    def build(self, dit_cfg, name):
        return ToyModule(dit_cfg, self.double_hooks, self.single_hooks, name=name)


def _toy_cfg(**mech):
    return BASE.replace(mechanisms=(ToyMechanism(**mech),))


def _apply(cfg, params, inp, cond=None, **kw):
    return np.asarray(jax.jit(HunyuanVideoDiT(cfg).apply, static_argnames=())(
        {"params": params}, inp["latents"], inp["timestep"], inp["text_states"], inp["text_mask"],
        inp["text_pooled"], inp["guidance"], cond, **kw))


@pytest.fixture(scope="module")
def params():
    return random_params(_toy_cfg(), seed=0)


@pytest.fixture(scope="module")
def inp():
    return random_inputs(BASE, latent_thw=(3, 4, 6))


def test_plain_model_has_no_mechanism_params():
    assert "toy" not in abstract_params(BASE)
    assert set(abstract_params(_toy_cfg())) == set(abstract_params(BASE)) | {"toy"}


def test_prefix_tokens_with_their_own_positions(params, inp):
    """Frames 1..2 given as prefix tokens at positions t = 1..2, before frame 0 as the video: attention does
    not depend on token order, so frame 0's output equals the full three-frame run's."""
    cfg = _toy_cfg()
    full = _apply(cfg, params, inp)
    first = dict(inp, latents=inp["latents"][:, :1])
    cond = {"prefix_latents": inp["latents"][:, 1:], "prefix_offset": (1, 0, 0)}
    out = _apply(cfg, params, first, cond)
    assert out.shape == first["latents"].shape
    np.testing.assert_allclose(out, full[:, :1], rtol=0, atol=1e-5 * np.abs(full).max())
    shifted = _apply(cfg, params, first, dict(cond, prefix_offset=(-1, 0, 0)))
    assert np.abs(shifted - full[:, :1]).max() > 1e-3  # the positions are really used


def test_token_add_equals_shifted_latents(params, inp):
    cfg = _toy_cfg()
    delta = np.random.default_rng(5).standard_normal(inp["latents"].shape).astype(np.float32)
    want = _apply(cfg, params, dict(inp, latents=inp["latents"] + delta))
    got = _apply(cfg, params, inp, {"latent_delta": delta})
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_vec_add_acts_per_sample(params, inp):
    cfg = _toy_cfg()
    base = _apply(cfg, params, inp)
    vec_add = np.zeros((2, cfg.hidden_size), np.float32)
    vec_add[1] = 0.5
    out = _apply(cfg, params, inp, {"vec_add": vec_add})
    np.testing.assert_array_equal(out[0], base[0])
    assert np.abs(out[1] - base[1]).max() > 1e-3


def _identity(carry):
    return carry


def _zero_text_stream(carry):
    img, txt = carry
    return img, jnp.zeros_like(txt)


def _scale_all(x):
    return 0.5 * x


def test_identity_hooks_split_the_scan_without_changing_numbers(params, inp):
    base = _apply(_toy_cfg(), params, inp)
    hooked = _toy_cfg(double_hooks=((0, _identity), (1, _identity)), single_hooks=((0, _identity),))
    np.testing.assert_allclose(_apply(hooked, params, inp, {}), base, rtol=1e-6, atol=1e-6)


def test_hooks_act_after_their_block(params, inp):
    """Zeroing the text stream after the last double block changes the video; halving the tokens after the
    last single block only rescales what the final layer's LayerNorm undoes (up to its eps)."""
    base = _apply(_toy_cfg(), params, inp)
    zeroed = _apply(_toy_cfg(double_hooks=((1, _zero_text_stream),)), params, inp, {})
    assert np.abs(zeroed - base).max() > 1e-3
    halved = _apply(_toy_cfg(single_hooks=((1, _scale_all),)), params, inp, {})
    np.testing.assert_allclose(halved, base, rtol=0, atol=1e-4 * np.abs(base).max())


def test_segments_split_at_hooks():
    assert segments(5, []) == [(0, 5, [])]
    assert segments(5, [(1, _identity), (1, _scale_all), (4, _identity)]) == [
        (0, 2, [_identity, _scale_all]), (2, 5, [_identity])]
    with pytest.raises(ValueError, match="hook after block 5"):
        segments(5, [(5, _identity)])


def _loss(p, cfg, inp):
    out = HunyuanVideoDiT(cfg).apply({"params": p}, inp["latents"], inp["timestep"], inp["text_states"],
                                     inp["text_mask"], inp["text_pooled"], inp["guidance"])
    return jnp.mean(out ** 2)


_value_and_grad = jax.jit(jax.value_and_grad(_loss), static_argnums=1)


@pytest.fixture(scope="module")
def reference_grads(inp):
    params = random_params(BASE, seed=1)
    return params, _value_and_grad(params, BASE, inp)


@pytest.mark.parametrize("change", [dict(scan_layers=False), dict(remat_policy="full"),
                                    dict(remat_policy="save_dots")])
def test_execution_switches_keep_numbers_and_gradients(change, inp, reference_grads):
    params, (want, want_grad) = reference_grads
    got, got_grad = _value_and_grad(params, BASE.replace(**change), inp)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_bad_inputs_are_named(params, inp):
    with pytest.raises(ValueError, match="no conditioning mechanisms"):
        _apply(BASE, params, inp, {"vec_add": 0})
    with pytest.raises(ValueError, match="embeds guidance"):
        _apply(BASE, params, dict(inp, guidance=None))
    with pytest.raises(ValueError, match="multiples of the patch"):
        _apply(BASE, params, dict(inp, latents=inp["latents"][:, :, :3]))
