"""The causal VAE against a tiny random-init ``diffusers.AutoencoderKLHunyuanVideo`` in fp32: encode (mean and
log-variance) and decode untiled for 1, 9 and 17 frames, and tiled encode / decode at the same tile settings."""

import functools

import chex
import jax
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.models import CausalVAE
from tests.torch_reference import tiny_diffusers_vae, to_channels_first, to_channels_last

TOL = 1e-5


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def cfg():
    return configs.get("tiny").vae


@pytest.fixture(scope="module")
def ref(cfg):
    return tiny_diffusers_vae(cfg)


@pytest.fixture(scope="module")
def params(cfg, ref):
    return convert.vae_from_torch(ref.state_dict(), cfg)


@pytest.fixture(scope="module")
def vae(cfg):
    return CausalVAE(cfg)


def _video(batch, frames, h, w, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, frames, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("frames", [1, 9, 17])
def test_encode_matches_diffusers(vae, params, ref, frames):
    video = _video(2, frames, 32, 48, seed=frames)
    with torch.inference_mode():
        post = ref.encode(to_channels_first(video)).latent_dist
    dist = vae.apply({"params": params}, video, method=CausalVAE.encode_distribution)
    chex.assert_shape(dist.mean, (2, (frames - 1) // 4 + 1, 4, 6, 16))
    assert rel_l2(dist.mean, to_channels_last(post.mean)) < TOL
    assert rel_l2(dist.logvar, to_channels_last(post.logvar)) < TOL


@pytest.mark.parametrize("latent_frames", [1, 3, 5])
def test_decode_matches_diffusers(vae, params, ref, latent_frames):
    z = np.random.default_rng(latent_frames).standard_normal((2, latent_frames, 4, 6, 16)).astype(np.float32)
    with torch.inference_mode():
        want = to_channels_last(ref.decode(to_channels_first(z)).sample)
    got = jax.jit(functools.partial(vae.apply, method=CausalVAE.decode))({"params": params}, z)
    chex.assert_shape(got, (2, 4 * (latent_frames - 1) + 1, 32, 48, 3))
    assert rel_l2(got, want) < TOL


def test_posterior_sample(vae, params):
    video = _video(1, 5, 16, 16)
    dist = vae.apply({"params": params}, video, method=CausalVAE.encode_distribution)
    a, b = dist.sample(jax.random.key(1)), dist.sample(jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    eps = np.asarray((a - dist.mean) / dist.std)
    assert abs(eps.mean()) < 0.15 and abs(eps.std() - 1) < 0.15
    assert not np.allclose(a, dist.sample(jax.random.key(2)))


# Small tiles so that the tiny clips below use every tiling path: several temporal chunks, each in a grid of
# spatial tiles with ragged edges.
SMALL_TILES = configs.VAETiling(tile_size=16, tile_stride=8, tile_frames=8, tile_frame_stride=4)


@pytest.fixture(scope="module")
def tiled_ref(cfg):
    """A second reference model with the same weights, tiled at ``SMALL_TILES``."""
    model = tiny_diffusers_vae(cfg)
    model.use_framewise_encoding = model.use_framewise_decoding = True
    model.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16, tile_sample_min_num_frames=8,
                        tile_sample_stride_height=8, tile_sample_stride_width=8, tile_sample_stride_num_frames=4)
    return model


def _decode_both(vae, params, ref, z, tiling):
    with torch.inference_mode():
        want = to_channels_last(ref.decode(to_channels_first(z)).sample)
    got = jax.jit(functools.partial(vae.apply, tiling=tiling, method=CausalVAE.decode))({"params": params}, z)
    return np.asarray(got), want


@pytest.fixture(scope="module")
def tiled_case(vae, params, tiled_ref):
    """Latents of 6 frames, 5 x 6 (several temporal chunks, each a grid of ragged spatial tiles), decoded tiled."""
    z = np.random.default_rng(7).standard_normal((1, 6, 5, 6, 16)).astype(np.float32)
    return (z, *_decode_both(vae, params, tiled_ref, z, SMALL_TILES))


def test_tiled_decode_matches_diffusers_tiled(tiled_case):
    _, got, want = tiled_case
    chex.assert_shape(got, want.shape)
    assert rel_l2(got, want) < TOL


def test_tiled_decode_batch_and_single_chunk(vae, params, tiled_ref):
    z = np.random.default_rng(9).standard_normal((2, 2, 3, 5, 16)).astype(np.float32)
    got, want = _decode_both(vae, params, tiled_ref, z, SMALL_TILES)
    chex.assert_shape(got, (2, 5, 24, 40, 3))
    assert rel_l2(got, want) < TOL


def test_tiled_encode_matches_diffusers_tiled(vae, params, tiled_ref):
    video = _video(1, 13, 24, 32, seed=3)
    with torch.inference_mode():
        want = to_channels_last(tiled_ref.encode(to_channels_first(video)).latent_dist.mean)
    got = vae.apply({"params": params}, video, SMALL_TILES, method=CausalVAE.encode)
    chex.assert_shape(got, want.shape)
    assert rel_l2(got, want) < TOL


def test_tiling_error_is_the_references(vae, params, ref, tiled_case):
    """Tiled and untiled decodes differ (per-tile GroupNorm statistics, blending) by what they differ in the
    reference, to a fraction of a percent."""
    z, ours_tiled, ref_tiled = tiled_case
    ours_untiled, ref_untiled = _decode_both(vae, params, ref, z, None)
    ref_gap, our_gap = rel_l2(ref_tiled, ref_untiled), rel_l2(ours_tiled, ours_untiled)
    assert ref_gap > 0.01
    assert abs(our_gap - ref_gap) < 1e-3 * ref_gap


def test_tiling_below_the_tile_size_is_exact(vae, params):
    z = np.random.default_rng(8).standard_normal((1, 3, 4, 4, 16)).astype(np.float32)
    untiled = vae.apply({"params": params}, z, method=CausalVAE.decode)
    tiled = vae.apply({"params": params}, z, configs.VAETiling(), method=CausalVAE.decode)
    np.testing.assert_array_equal(tiled, untiled)


def test_fp16_compute_tracks_fp32(cfg, params):
    """The official run's dtype: fp16 convolutions with fp32 GroupNorm stay within fp16 rounding of fp32."""
    z = np.random.default_rng(11).standard_normal((1, 3, 4, 4, 16)).astype(np.float32)
    want = CausalVAE(cfg).apply({"params": params}, z, method=CausalVAE.decode)
    half = cfg.replace(dtype="float16", param_dtype="float16")
    half_params = jax.tree.map(lambda p: p.astype(np.float16), params)
    got = CausalVAE(half).apply({"params": half_params}, z, method=CausalVAE.decode)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert rel_l2(got, want) < 5e-3
