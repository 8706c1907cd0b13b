"""Four Euler steps of the compiled sampling program against a PyTorch loop over a tiny random-init diffusers
transformer (same noise, same sigmas): embedded guidance, classic CFG and image-to-video token replacement;
fp32 relative error < 1e-4 on the final latents."""

import chex
import jax
import numpy as np
import pytest
import torch

from hcjax import configs, convert, sampling
from hcjax.pipelines import SampleRequest, TextEmbeddings, denoise_fn
from hcjax.pipelines.progress import StepProgress
from tests.torch_reference import rel_l2, tiny_diffusers_dit, to_channels_last

TOL = 1e-4
STEPS, SHIFT = 4, 7.0


def _torch_sigmas():
    s = torch.linspace(1, 0, STEPS + 1)
    return (SHIFT * s) / (1 + (SHIFT - 1) * s)


def _text(cfg, valid, seed, length=8):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(length)[None] < torch.tensor(valid)[:, None]).to(torch.int64)
    return (torch.randn(len(valid), length, cfg.text_dim, generator=g), mask,
            torch.randn(len(valid), cfg.pooled_dim, generator=g))


def _emb(t):
    return TextEmbeddings(t[0].numpy(), t[1].numpy().astype(np.int32), t[2].numpy())


def _torch_loop(model, x, text, negative=None, cfg_scale=1.0, guidance=None, image_latent=None):
    """The reference loops (diffusers' HunyuanVideo / I2V token-replace pipelines), restated."""
    sigmas = _torch_sigmas()
    if image_latent is not None:
        t = torch.tensor([0.999])
        x = x * t + image_latent * (1 - t)
    with torch.no_grad():
        for i in range(STEPS):
            inp = x if image_latent is None else torch.cat([image_latent, x[:, :, 1:]], dim=2)
            ts = (sigmas[i] * 1000).expand(x.shape[0])
            v = model(inp, ts, *text[:2], text[2], guidance, return_dict=False)[0]
            if negative is not None:
                vu = model(inp, ts, *negative[:2], negative[2], guidance, return_dict=False)[0]
                v = vu + cfg_scale * (v - vu)
            if image_latent is None:
                x = x + v * (sigmas[i + 1] - sigmas[i])
            else:
                x = torch.cat([image_latent, x[:, :, 1:] + v[:, :, 1:] * (sigmas[i + 1] - sigmas[i])], dim=2)
    return to_channels_last(x)


def _jax_loop(cfg, params, noise, text, request, negative=None, image_latent=None, progress=None):
    fn = jax.jit(denoise_fn(cfg, request, progress))
    return np.asarray(fn(params, to_channels_last(noise), text, negative,
                         None if image_latent is None else to_channels_last(image_latent)))


def _noise(cfg, batch=2, thw=(3, 6, 8), seed=11):
    return torch.randn(batch, cfg.in_channels, *thw, generator=torch.Generator().manual_seed(seed))


def test_embedded_guidance_loop():
    cfg = configs.get("tiny").dit
    ref = tiny_diffusers_dit(cfg, seed=1)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    text, noise = _text(cfg, [8, 5], seed=2), _noise(cfg)
    request = SampleRequest(frames=9, height=48, width=64, steps=STEPS, shift=SHIFT, embedded_guidance=6.0)
    want = _torch_loop(ref, noise, text, guidance=torch.full((2,), 6016.0))
    got = _jax_loop(cfg, params, noise, _emb(text), request)
    chex.assert_shape(got, (2, 3, 6, 8, cfg.in_channels))
    assert rel_l2(got, want) < TOL


def test_cfg_loop():
    cfg = configs.get("tiny").dit.replace(guidance_embed=False)
    ref = tiny_diffusers_dit(cfg, seed=3)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    text, negative, noise = _text(cfg, [8, 3], seed=4), _text(cfg, [2, 6], seed=5), _noise(cfg, seed=12)
    request = SampleRequest(frames=9, height=48, width=64, steps=STEPS, shift=SHIFT, embedded_guidance=None,
                            cfg_scale=6.0)
    want = _torch_loop(ref, noise, text, negative, cfg_scale=6.0)
    got = _jax_loop(cfg, params, noise, _emb(text), request, negative=_emb(negative))
    assert rel_l2(got, want) < TOL
    without = SampleRequest(frames=9, height=48, width=64, steps=STEPS, shift=SHIFT, embedded_guidance=None)
    assert rel_l2(_jax_loop(cfg, params, noise, _emb(text), without), want) > 1e-2   # CFG matters


@pytest.fixture(scope="module")
def i2v():
    cfg = configs.get("tiny-i2v").dit
    ref = tiny_diffusers_dit(cfg, seed=6, image_condition_type="token_replace")
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    g = torch.Generator().manual_seed(7)
    image_latent = torch.randn(2, cfg.in_channels, 1, 6, 8, generator=g)
    return cfg, ref, params, image_latent


def test_image_to_video_loop(i2v):
    cfg, ref, params, image_latent = i2v
    text, noise = _text(cfg, [6, 8], seed=8), _noise(cfg, seed=13)
    request = SampleRequest(frames=9, height=48, width=64, steps=STEPS, shift=SHIFT, embedded_guidance=6.0)
    want = _torch_loop(ref, noise, text, guidance=torch.full((2,), 6016.0), image_latent=image_latent)
    got = _jax_loop(cfg, params, noise, _emb(text), request, image_latent=image_latent)
    assert rel_l2(got, want) < TOL
    np.testing.assert_array_equal(got[:, :1], to_channels_last(image_latent))   # bit-identical first frame


def test_image_changes_the_video(i2v):
    cfg, _, params, image_latent = i2v
    text, noise = _text(cfg, [6, 8], seed=8), _noise(cfg, seed=13)
    request = SampleRequest(frames=9, height=48, width=64, steps=STEPS, shift=SHIFT, embedded_guidance=6.0)
    a = _jax_loop(cfg, params, noise, _emb(text), request, image_latent=image_latent)
    b = _jax_loop(cfg, params, noise, _emb(text), request, image_latent=image_latent.flip(-1))
    assert rel_l2(b[:, 1:], a[:, 1:]) > 1e-3


def test_loop_is_deterministic_and_reports_every_step():
    cfg = configs.get("tiny").dit
    params = convert.dit_from_torch(tiny_diffusers_dit(cfg, seed=1).state_dict(), cfg, source="diffusers")
    text, noise = _emb(_text(cfg, [8, 5], seed=2)), _noise(cfg)
    request = SampleRequest(frames=9, height=48, width=64, steps=6, shift=SHIFT)
    bar = StepProgress(enabled=False)
    bar.start(6)
    a = _jax_loop(cfg, params, noise, text, request, progress=bar)
    jax.effects_barrier()
    assert bar.done == 6
    np.testing.assert_array_equal(a, _jax_loop(cfg, params, noise, text, request))


def test_euler_sample_is_exact_for_constant_velocity():
    """x0 = noise - v when v is constant: the Euler loop integrates sigma from 1 to 0 exactly once."""
    noise = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 16))
    v = jax.random.normal(jax.random.key(1), noise.shape)
    out = sampling.euler_sample(lambda x, t: v, noise, sampling.flow_sigmas(13, 5.0))
    np.testing.assert_allclose(out, noise - v, atol=1e-5)
    with pytest.raises(ValueError, match="decrease"):
        sampling.euler_sample(lambda x, t: v, noise, np.array([0.0, 1.0], np.float32))
