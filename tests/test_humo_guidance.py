"""HuMo's time-adaptive CFG (reference B.4) as a guidance strategy: the combined velocity against the reference
formula computed here independently, the branch switch at integer timestep 980, one batched forward per step."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hcjax import sampling
from hcjax.sampling import TimeAdaptiveCFG, flow_sigmas, multi_branch

T_NEG, T_POS = 0.0, 1.0     # text codes of the fake model's branch inputs


def _fake_model(calls):
    """A model whose velocity is a fixed random function of (x, text, image, audio) per sample, so each branch
    gives a distinct output; records every call's batch size."""
    w = jax.random.normal(jax.random.key(0), (4, 3, 5))

    def model_fn(x, t, inputs):
        calls.append(x.shape[0])
        feats = jnp.stack([inputs["text"], inputs["image"], inputs["audio"], t / 1000.0], -1)   # [B, 4]
        return x * 0.5 + jnp.einsum("bk,kij->bij", jnp.sin(feats * 3.0 + 1.0), w)

    return model_fn


def _branch(b, text, image, audio):
    return dict(text=jnp.full((b,), text), image=jnp.full((b,), image), audio=jnp.full((b,), audio))


def _reference(e, t, s_t=5.0, s_a=5.5):
    """HuMo-17B TIA written out: e(T, I, A), ... are the fake model's outputs on those inputs."""
    if int(t) > 980:
        return e(T_NEG, 1, 0) + s_t * (e(T_POS, 1, 0) - e(T_NEG, 1, 0)) + s_a * (e(T_POS, 1, 1) - e(T_POS, 1, 0))
    return (e(T_NEG, 0, 0) + (s_t - 2.0) * (e(T_POS, 1, 0) - e(T_NEG, 0, 0))
            + s_a * (e(T_POS, 1, 1) - e(T_POS, 1, 0)))


def test_combined_velocity_matches_the_reference_formula_before_and_after_the_switch():
    b, calls = 2, []
    model_fn = _fake_model(calls)
    x = jax.random.normal(jax.random.key(1), (b, 3, 5))
    cfg = TimeAdaptiveCFG()
    velocity = multi_branch(model_fn, cfg.branches(_branch(b, T_POS, 1, 1), _branch(b, T_POS, 1, 0),
                                                   _branch(b, T_NEG, 1, 0), _branch(b, T_NEG, 0, 0)), cfg.combine)
    for t in (999.0, 981.9, 980.9, 980.0, 500.0):
        timestep = jnp.full((b,), t, jnp.float32)
        e = lambda text, image, audio: model_fn(x, timestep, _branch(b, text, image, audio))   # noqa: E731
        calls.clear()
        got = velocity(x, timestep)
        assert calls == [3 * b], calls          # one batched forward of the three branches
        want = _reference(lambda *k: np.asarray(e(*k)), t)
        chex.assert_shape(got, (b, 3, 5))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # the two formulas really differ at this point (so the test can tell which one ran)
    outputs = lambda *k: np.asarray(e(*k))   # noqa: E731
    assert not np.allclose(_reference(outputs, 990.0), _reference(outputs, 970.0))


def test_switch_counts_integer_timesteps_and_inside_a_jitted_loop():
    """At 50 steps and shift 5 exactly the first 5 timesteps are above 980 (as HuMo's schedule); in the compiled
    Euler loop the model is traced once and the branch choice happens per step."""
    sigmas = flow_sigmas(50, 5.0)
    cfg = TimeAdaptiveCFG()
    assert cfg.early_steps(sigmas[:-1] * 1000) == 5
    assert TimeAdaptiveCFG(switch=None).early_steps(sigmas[:-1] * 1000) == 50
    np.testing.assert_array_equal(cfg.early(jnp.array([981.0, 980.99, 980.0, 12.0])), [True, False, False, False])

    b, calls = 1, []
    model_fn = _fake_model(calls)
    velocity = multi_branch(model_fn, cfg.branches(_branch(b, T_POS, 1, 1), _branch(b, T_POS, 1, 0),
                                                   _branch(b, T_NEG, 1, 0), _branch(b, T_NEG, 0, 0)), cfg.combine)
    noise = jax.random.normal(jax.random.key(2), (b, 3, 5))
    sig = flow_sigmas(8, 5.0)
    got = sampling.euler_sample(velocity, noise, sig)
    assert calls == [3 * b]                      # traced once: one batched forward per step
    x = np.asarray(noise)
    for i in range(8):                           # the same loop by hand, with the reference formula
        ts = jnp.full((b,), sig[i] * 1000, jnp.float32)
        e = lambda text, image, audio: np.asarray(model_fn(jnp.asarray(x), ts, _branch(b, text, image, audio)))  # noqa
        x = x + _reference(e, float(ts[0])) * (sig[i + 1] - sig[i])
    np.testing.assert_allclose(np.asarray(got), x, rtol=1e-4, atol=1e-4)


def test_text_audio_mode_never_switches():
    b, calls = 2, []
    model_fn = _fake_model(calls)
    x = jax.random.normal(jax.random.key(3), (b, 3, 5))
    cfg = TimeAdaptiveCFG(text_scale=5.0, audio_scale=5.5, switch=None)
    neg = _branch(b, T_NEG, 0, 0)
    velocity = multi_branch(model_fn, cfg.branches(_branch(b, T_POS, 0, 1), _branch(b, T_POS, 0, 0), neg, neg),
                            cfg.combine)
    t = jnp.full((b,), 400.0)
    e = lambda text, audio: np.asarray(model_fn(x, t, _branch(b, text, 0, audio)))   # noqa: E731
    want = e(T_NEG, 0) + 5.0 * (e(T_POS, 0) - e(T_NEG, 0)) + 5.5 * (e(T_POS, 1) - e(T_POS, 0))
    np.testing.assert_allclose(np.asarray(velocity(x, t)), want, rtol=1e-5, atol=1e-5)
