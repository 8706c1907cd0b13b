"""VAE input checks, config and tiling validation, converter strictness, and the causal structure."""

import re

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.convert import rules
from hcjax.models import CausalVAE, random_params
from hcjax.models.vae import upsample_nearest
from hcjax.models.vae_conv import PhaseUpsample
from hcjax.models.vae_tiling import blend
from tests.torch_reference import tiny_diffusers_vae


@pytest.fixture(scope="module")
def cfg():
    return configs.get("tiny").vae


@pytest.fixture(scope="module")
def params(cfg):
    return random_params(cfg)


@pytest.mark.parametrize("shape, values, message", [
    ((1, 8, 16, 16, 3), 0.0, "not 4k+1; trim the clip to 5 frames"),
    ((1, 5, 20, 16, 3), 0.0, "multiples of 8; resize or crop to 16x16"),
    ((1, 5, 16, 16, 4), 0.0, "channels last"),
    ((5, 16, 16, 3), 0.0, "channels last"),
    ((1, 5, 16, 16, 3), 255.0, "expects [-1, 1]"),
])
def test_bad_video_is_refused_before_work(cfg, params, shape, values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CausalVAE(cfg).apply({"params": params}, np.full(shape, values, np.float32), method=CausalVAE.encode)


def test_bad_latents_are_refused(cfg, params):
    with pytest.raises(ValueError, match=r"latents \[B, T, h, w, 16\]"):
        CausalVAE(cfg).apply({"params": params}, np.zeros((1, 2, 4, 4, 3), np.float32), method=CausalVAE.decode)


def test_config_validation_lists_every_problem():
    with pytest.raises(ValueError) as err:
        configs.VAEConfig(temporal_ratio=8, spatial_ratio=6, block_channels=(30, 64, 64, 64))
    text = str(err.value)
    assert "temporal_ratio 8" in text and "spatial_ratio 6" in text and "[30]" in text
    with pytest.raises(ValueError, match="blocks 'plain' is not one of"):
        configs.VAEConfig(blocks="plain")


def test_conv_blocks_variant():
    """``blocks="conv"``: the causal VAE's shapes from one conv per block, and no official checkpoint to load."""
    cfg = configs.get("demo").vae
    assert cfg.blocks == "conv"
    params = random_params(cfg)
    assert sorted(params["encoder"]) == ["blocks_0", "blocks_1", "blocks_2", "blocks_3", "conv_out"]
    video = np.random.default_rng(0).uniform(-1, 1, (2, 9, 32, 16, 3)).astype(np.float32)
    latents = CausalVAE(cfg).apply({"params": params}, video, method=CausalVAE.encode)
    chex.assert_shape(latents, (2, 3, 4, 2, cfg.latent_channels))
    chex.assert_shape(CausalVAE(cfg).apply({"params": params}, latents, method=CausalVAE.decode), video.shape)
    with pytest.raises(ValueError, match="blocks='conv'.*no official"):
        convert.vae_from_torch({}, cfg)


def test_conv_blocks_mix_time_only_within_a_latent_frame():
    """``blocks="conv"``: latent frame 2 is a function of pixel frames 5..8 alone, and decodes into them alone."""
    cfg = configs.get("demo").vae
    params, vae = random_params(cfg), CausalVAE(cfg)
    video = np.random.default_rng(1).uniform(-1, 1, (1, 13, 16, 16, 3)).astype(np.float32)
    changed = video.copy()
    changed[:, 6] = -changed[:, 6]
    moments = [np.asarray(vae.apply({"params": params}, v, method=CausalVAE.moments)) for v in (video, changed)]
    moved = np.abs(moments[0] - moments[1]).max(axis=(0, 2, 3, 4))
    assert moved[2] > 1e-3 and np.all(moved[[0, 1, 3]] == 0), moved
    latents = moments[0][..., :cfg.latent_channels]
    bumped = latents.copy()
    bumped[:, 2] += 1.0
    frames = [np.asarray(vae.apply({"params": params}, z, method=CausalVAE.decode_untiled)) for z in (latents, bumped)]
    moved = np.abs(frames[0] - frames[1]).max(axis=(0, 2, 3, 4))
    assert np.all(moved[5:9] > 1e-4) and np.all(moved[:5] == 0) and np.all(moved[9:] == 0), moved


def test_phase_upsample_gives_each_frame_its_own_features():
    """The conv decoder's time upsampling: latent frame t > 0 becomes ``ft`` frames, one per phase of a 1x1x1
    projection (frame 0 keeps the last phase); space is nearest-upsampled."""
    cfg = configs.get("demo").vae
    up = PhaseUpsample(cfg, (2, 2, 2))
    z = np.random.default_rng(0).normal(size=(1, 3, 2, 2, 4)).astype(np.float32)
    variables = nn.meta.unbox(up.init(jax.random.key(0), z))
    out = np.asarray(up.apply(variables, z))
    chex.assert_shape(out, (1, 5, 4, 4, 4))
    kernel, bias = (np.asarray(variables["params"]["phases"][k]) for k in ("kernel", "bias"))
    phases = (z @ kernel + bias).reshape(1, 3, 2, 2, 2, 4)          # [b, t, h, w, phase, c]
    expected = [phases[:, 0, :, :, 1]] + [phases[:, t, :, :, r] for t in (1, 2) for r in (0, 1)]
    expected = np.repeat(np.repeat(np.stack(expected, 1), 2, axis=2), 2, axis=3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(out[:, 1] - out[:, 2]).max() > 1e-3    # the two frames of latent frame 1 differ


def test_tiling_validation(cfg, params):
    bad = configs.VAETiling(tile_size=100, tile_stride=120, tile_frames=10)
    with pytest.raises(ValueError) as err:
        CausalVAE(cfg).apply({"params": params}, np.zeros((1, 2, 4, 4, 16), np.float32), bad,
                             method=CausalVAE.decode)
    text = str(err.value)
    assert "tile_stride <= tile_size" in text and "multiples of the spatial ratio 8" in text
    assert "multiples of the temporal ratio 4" in text


def test_strict_converter(cfg):
    sd = dict(tiny_diffusers_vae(cfg).state_dict())
    del sd["decoder.up_blocks.1.resnets.0.conv1.conv.weight"]
    sd["decoder.extra.weight"] = torch.zeros(2)
    sd["quant_conv.bias"] = torch.zeros(31)
    with pytest.raises(convert.CheckpointMismatch) as err:
        convert.vae_from_torch(sd, cfg)
    e = err.value
    assert e.missing == ["decoder.up_blocks.1.resnets.0.conv1.conv.weight"]
    assert e.unexpected == ["decoder.extra.weight"]
    assert e.misshaped == [("quant_conv.bias", (31,), (32,))]


def test_converter_touches_no_data_before_checks(cfg, monkeypatch):
    sd = dict(tiny_diffusers_vae(cfg).state_dict())
    del sd["encoder.conv_in.conv.bias"]
    monkeypatch.setattr(rules, "to_numpy", lambda _: pytest.fail("data converted before validation"))
    with pytest.raises(convert.CheckpointMismatch):
        convert.vae_from_torch(sd, cfg)


def test_causal_conv_never_sees_later_frames():
    from hcjax.nn.conv import CausalConv3d

    conv = CausalConv3d(4, 3, (2, 2, 2))
    x = np.random.default_rng(0).standard_normal((1, 9, 8, 8, 3)).astype(np.float32)
    p = conv.init(jax.random.key(0), x)
    y = x.copy()
    y[:, 5:] += 1.0
    fx, fy = conv.apply(p, x), conv.apply(p, y)
    assert fx.shape == (1, 5, 4, 4, 4)  # T_out = (T - 1) // 2 + 1
    np.testing.assert_array_equal(fx[:, :3], fy[:, :3])  # output t sees inputs 2t-2 .. 2t
    assert not np.allclose(fx[:, 3], fy[:, 3])


def test_mid_attention_frame_causal_flag(cfg, params):
    """Frame-causal and full attention agree for the last frame (it sees every frame either way) and differ
    for earlier frames."""
    from hcjax.models.vae import MidAttention

    x = np.random.default_rng(1).standard_normal((1, 3, 2, 2, 32)).astype(np.float32)
    p = {"params": params["decoder"]["mid_block"]["attentions_0"]}
    causal = MidAttention(cfg.replace(mid_block_causal_attn=True)).apply(p, x)
    full = MidAttention(cfg.replace(mid_block_causal_attn=False)).apply(p, x)
    np.testing.assert_allclose(causal[:, 2], full[:, 2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(causal[:, 0], full[:, 0], atol=1e-4)


def test_block_causal_attention():
    """Queries of block 0 attend over block 0 alone; query chunking changes nothing."""
    from hcjax.nn.attention import xla_attention

    q, k, v = (np.random.default_rng(i).standard_normal((1, 1, 12, 8)).astype(np.float32) for i in range(3))
    masked = xla_attention(q, k, v, causal_block=4)
    np.testing.assert_allclose(masked[:, :, :4], xla_attention(q[:, :, :4], k[:, :, :4], v[:, :, :4]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(masked[:, :, 8:], xla_attention(q[:, :, 8:], k, v), rtol=1e-6, atol=1e-6)
    chunked = xla_attention(q, k, v, causal_block=4, query_chunk=5)
    np.testing.assert_allclose(chunked, masked, rtol=1e-6, atol=1e-6)


def test_upsample_first_frame_spatial_only():
    x = np.arange(3 * 2 * 2, dtype=np.float32).reshape(1, 3, 2, 2, 1)
    y = np.asarray(upsample_nearest(x, (2, 2, 2)))
    assert y.shape == (1, 5, 4, 4, 1)
    np.testing.assert_array_equal(y[0, 0, ::2, ::2, 0], x[0, 0, :, :, 0])
    np.testing.assert_array_equal(y[0, 1], y[0, 2])
    np.testing.assert_array_equal(y[0, 3, 1::2, 1::2, 0], x[0, 2, :, :, 0])


def test_blend_is_the_reference_ramp():
    a = np.ones((1, 1, 6, 1, 1), np.float32)
    b = np.zeros((1, 1, 5, 1, 1), np.float32)
    out = np.asarray(blend(a, b, 4, axis=2))[0, 0, :, 0, 0]
    np.testing.assert_allclose(out, [1.0, 0.75, 0.5, 0.25, 0.0])
    assert np.asarray(blend(a, b, 9, axis=2))[0, 0, 4, 0, 0] == pytest.approx(0.2)


def test_dit_path_needs_multiples_of_16(cfg):
    from hcjax.models.vae import check_video

    video = np.zeros((1, 5, 24, 32, 3), np.float32)
    check_video(video, cfg)
    with pytest.raises(ValueError, match="multiples of 16; resize or crop to 16x32"):
        check_video(video, cfg, size_multiple=16)
