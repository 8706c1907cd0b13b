"""The flow schedule against the reference scheduler (bit-exact) and diffusers' (to float32 rounding), and
the small guidance functions."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hcjax import sampling


def _official(num_steps, shift):
    """The reference FlowMatchDiscreteScheduler with reverse=True, restated in torch."""
    s = torch.linspace(1, 0, num_steps + 1)
    s = (shift * s) / (1 + (shift - 1) * s)
    return s.numpy(), (s[:-1] * 1000).to(torch.float32).numpy()


@pytest.mark.parametrize("shift", [1.0, 5.0, 7.0, 13.0])
@pytest.mark.parametrize("num_steps", [30, 50])
def test_flow_sigmas_equal_reference_bit_for_bit(num_steps, shift):
    sigmas = sampling.flow_sigmas(num_steps, shift)
    want_sigmas, want_t = _official(num_steps, shift)
    assert sigmas.dtype == np.float32 and sigmas.shape == (num_steps + 1,)
    np.testing.assert_array_equal(sigmas, want_sigmas)
    np.testing.assert_array_equal(sampling.flow_timesteps(sigmas), want_t)


def test_flow_sigmas_equal_reference_for_every_step_count():
    """``torch.linspace`` has its own rounding (two halves, fused multiply-add); all N up to 200 match."""
    for n in range(1, 201):
        np.testing.assert_array_equal(sampling.flow_sigmas(n, 7.0), _official(n, 7.0)[0], err_msg=str(n))


@pytest.mark.parametrize("shift", [1.0, 7.0, 13.0])
def test_flow_sigmas_match_diffusers_scheduler(shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, 31)[:-1])   # as diffusers' HunyuanVideoPipeline
    ours = sampling.flow_sigmas(30, shift)
    np.testing.assert_allclose(ours, sched.sigmas.numpy(), rtol=0, atol=2e-7)
    np.testing.assert_allclose(sampling.flow_timesteps(ours), sched.timesteps.numpy(), rtol=3e-7, atol=0)  # 2 ulp


def test_spec_checkpoints():
    s = sampling.flow_sigmas(50, 7.0)
    np.testing.assert_allclose(s[:4], [1.0, 0.997093, 0.994083, 0.990964], atol=1e-6)
    np.testing.assert_allclose(s[-3:], [0.225806, 0.125, 0.0], atol=1e-6)
    s = sampling.flow_sigmas(30, 13.0)
    np.testing.assert_allclose(s[-3:], [0.481481, 0.309524, 0.0], atol=1e-6)


@pytest.mark.parametrize("bad", [(0, 7.0), (-3, 7.0), (2.5, 7.0), (10, 0.0), (10, -1.0), (10, float("nan"))])
def test_flow_sigmas_refuse_bad_input(bad):
    with pytest.raises(ValueError):
        sampling.flow_sigmas(*bad)


def test_embedded_guidance_is_bf16_rounded():
    np.testing.assert_array_equal(sampling.embedded_guidance(6.0, 2), [6016.0, 6016.0])
    np.testing.assert_array_equal(sampling.embedded_guidance(3.5, 1), [3504.0])
    np.testing.assert_array_equal(sampling.embedded_guidance(6.0, 1, round_to=None), [6000.0])


def test_classic_cfg_and_multi_branch():
    rng = np.random.default_rng(0)
    vc, vu = (jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32) for _ in range(2))
    np.testing.assert_array_equal(sampling.classic_cfg(7.5)([vc, vu], None), vu + 7.5 * (vc - vu))
    rescaled = sampling.classic_cfg(7.5, rescale=1.0)([vc, vu], None)
    np.testing.assert_allclose(rescaled.std(axis=(1, 2)), vc.std(axis=(1, 2)), rtol=1e-5)

    def model(x, t, branch):  # a toy model whose output depends on x, t and the branch inputs
        return x * branch["w"][:, None, None] + t[:, None, None] * 1e-3

    x, t = jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32), jnp.array([500.0, 250.0])
    branches = [dict(w=jnp.array([1.0, 2.0])), dict(w=jnp.array([-1.0, 0.5])), dict(w=jnp.array([3.0, 3.0]))]
    seen = []
    combine = lambda vs, ts: seen.append(len(vs)) or vs[0] - vs[1] + 2 * vs[2]  # noqa: E731
    batched = sampling.multi_branch(model, branches, combine)(x, t)
    sequential = sampling.multi_branch(model, branches, combine, batched=False)(x, t)
    want = model(x, t, branches[0]) - model(x, t, branches[1]) + 2 * model(x, t, branches[2])
    np.testing.assert_allclose(batched, want, rtol=1e-6)
    np.testing.assert_allclose(sequential, want, rtol=1e-6)
    assert seen == [3, 3]
