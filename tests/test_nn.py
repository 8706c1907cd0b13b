"""Generic layers against PyTorch and against their defining properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hcjax.models.dit import text_segments
from hcjax.models.refiner import refiner_attention
from hcjax.nn import attention
from hcjax.nn.attention import xla_attention
from hcjax.nn.embeddings import timestep_sinusoid
from hcjax.nn.modulation import modulate
from hcjax.nn.norms import RMSNorm, layer_norm
from hcjax.nn.rope import apply_rope, grid_positions, rope_tables
from tests.torch_reference import rel_l2

RNG = np.random.default_rng(0)


def _qkv(b=2, length=40, heads=3, dim=16):
    return [RNG.standard_normal((b, length, heads, dim)).astype(np.float32) for _ in range(3)]


def _torch_sdpa(q, k, v, allowed):
    """PyTorch SDPA with a boolean [B, Lq, Lk] mask; layouts [B, L, H, D]."""
    t = lambda x: torch.from_numpy(np.array(x)).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=torch.from_numpy(np.array(allowed))[:, None])
    return out.transpose(1, 2).numpy()


def test_segment_attention_matches_masked_sdpa():
    q, k, v = _qkv()
    seg = np.zeros((2, 40), np.int32)
    seg[0, 33:] = 1
    seg[1, 20:] = 1
    want = _torch_sdpa(q, k, v, seg[:, :, None] == seg[:, None, :])
    got = np.asarray(attention(q, k, v, jnp.asarray(seg)))
    chex.assert_shape(got, q.shape)
    assert rel_l2(got, want) < 1e-6


@pytest.mark.parametrize("padded", [True, False])
def test_query_chunks_give_the_same_numbers(padded):
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in _qkv(length=100))  # head-major
    seg = jnp.asarray((np.arange(100) >= (77 if padded else 100)).astype(np.int32)[None].repeat(2, 0))
    whole = xla_attention(q, k, v, seg)
    np.testing.assert_allclose(xla_attention(q, k, v, seg, query_chunk=32), whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("masks", ["segments", "kv_mask", "causal_block"])
@pytest.mark.parametrize("query_chunk", [None, 32])
def test_per_head_loop_gives_the_same_numbers(masks, query_chunk):
    """One (sample, head) at a time, with each sample's own mask, equals all heads at once."""
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in _qkv(length=100))  # head-major, 2 samples x 3 heads
    seg = np.zeros((2, 100), np.int32)
    seg[0, 77:], seg[1, 40:] = 1, 1  # the samples' masks differ: a mask cut to the wrong sample shows
    kw = {"segments": dict(segment_ids=jnp.asarray(seg)), "kv_mask": dict(kv_mask=jnp.asarray(seg == 0)),
          "causal_block": dict(causal_block=10)}[masks]
    whole = xla_attention(q, k, v, **kw)
    looped = jax.jit(lambda *a: xla_attention(*a, query_chunk=query_chunk, per_head=True, **kw))(q, k, v)
    chex.assert_shape(looped, q.shape)
    np.testing.assert_allclose(looped, whole, rtol=1e-6, atol=1e-6)
    assert not np.allclose(whole, xla_attention(q, k, v), atol=1e-3)  # the mask matters here
    cotangent = jnp.asarray(RNG.standard_normal(q.shape).astype(np.float32))
    grads = [jax.grad(lambda *a, p=p: jnp.sum(xla_attention(*a, query_chunk=query_chunk, per_head=p, **kw)
                                               * cotangent), argnums=(0, 1, 2))(q, k, v) for p in (False, True)]
    for want, got in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_xla_plan_bounds_the_logits_of_a_step():
    """On CPU long sequences go head by head, chunked within a 24 MiB logits budget; short ones in one step."""
    from hcjax.nn.attention import _default_xla_plan

    assert _default_xla_plan((1, 4, 2368, 128), 2368) == (True, None)  # 22 MB per head: one step per head
    assert _default_xla_plan((2, 32, 256, 128), 256) == (False, None)  # a text encoder: one batched step
    per_head, chunk = _default_xla_plan((1, 24, 32768, 128), 32768)
    assert per_head and 32768 % chunk == 0 and 4 * chunk * 32768 <= 2 * 24 * 2**20


def test_single_segment_skips_the_mask_with_the_same_numbers():
    """Uniform segment ids take the unmasked branch; one padded sample in the batch takes the masked one."""
    q, k, v = _qkv()
    uniform = jnp.zeros((2, 40), jnp.int32)
    np.testing.assert_allclose(attention(q, k, v, uniform), attention(q, k, v, None), rtol=1e-6, atol=1e-7)
    mixed = uniform.at[1, 30:].set(1)
    want = _torch_sdpa(q, k, v, np.asarray(mixed[:, :, None] == mixed[:, None, :]))
    assert rel_l2(attention(q, k, v, mixed), want) < 1e-6


def test_attention_rejects_bad_arguments():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention impl"):
        attention(q, k, v, impl="flash3")
    with pytest.raises(ValueError, match="segment_ids"):
        attention(q, k, v, jnp.zeros((2, 39), jnp.int32))


def test_text_segments_are_count_based():
    mask = jnp.asarray([[1, 1, 1, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(text_segments(mask, 3), [[0] * 6 + [1], [0] * 5 + [1, 1]])


@pytest.mark.parametrize("mask", [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1], [0, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]])
def test_refiner_attention_matches_the_reference_mask(mask):
    """M[i, j] = mask[i] & mask[j], column 0 forced on, through torch SDPA as the reference computes it."""
    q, k, v = _qkv(b=1, length=6)
    m = np.asarray(mask, bool)[None]
    allowed = m[:, :, None] & m[:, None, :]
    allowed[:, :, 0] = True
    want = _torch_sdpa(q, k, v, allowed)
    got = np.asarray(refiner_attention(q, k, v, jnp.asarray([mask]), "auto"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _official_rope(x, positions, axes, theta):
    """The reference's formula in numpy float64 on head-major x: repeat-interleaved cos/sin, rotate_half on
    pairs."""
    cos, sin = [], []
    for i, d in enumerate(axes):
        freqs = 1.0 / theta ** (np.arange(0, d, 2)[: d // 2] / d)
        ang = np.outer(positions[:, i], freqs)
        cos.append(np.repeat(np.cos(ang), 2, axis=1))
        sin.append(np.repeat(np.sin(ang), 2, axis=1))
    cos, sin = np.concatenate(cos, 1)[None, None], np.concatenate(sin, 1)[None, None]
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = np.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(x.shape)
    return x * cos + rotated * sin


def test_rope_matches_the_reference_formula_and_spares_text():
    axes, theta = (4, 6, 6), 256.0
    positions = grid_positions(3, 4, 5, offset=(-1, 0, 5))
    x = RNG.standard_normal((2, 3, 60 + 7, 16)).astype(np.float32)  # head-major [B, H, L, D]
    cos, sin = rope_tables(jnp.asarray(positions), axes, theta, num_unrotated=7)
    out = np.asarray(apply_rope(jnp.asarray(x), cos, sin))
    want = _official_rope(x[:, :, :60].astype(np.float64), positions, axes, theta)
    assert rel_l2(out[:, :, :60], want) < 1e-6
    np.testing.assert_array_equal(out[:, :, 60:], x[:, :, 60:])


def test_grid_positions_are_row_major():
    pos = grid_positions(2, 3, 4)
    assert pos.shape == (24, 3)
    np.testing.assert_array_equal(pos[1 * 12 + 2 * 4 + 3], [1, 2, 3])


def test_timestep_sinusoid_is_cos_first():
    emb = np.asarray(timestep_sinusoid(jnp.asarray([0.0, 500.0])))
    np.testing.assert_array_equal(emb[0], [1.0] * 128 + [0.0] * 128)
    np.testing.assert_allclose(emb[1, [0, 128]], [np.cos(500.0), np.sin(500.0)], atol=1e-5)


def test_layer_norm_matches_torch():
    x = (RNG.standard_normal((3, 5, 64)) * 3 + 7).astype(np.float32)
    want = F.layer_norm(torch.from_numpy(x), (64,), eps=1e-6).numpy()
    assert rel_l2(layer_norm(jnp.asarray(x), 1e-6), want) < 1e-6


def test_rms_norm_returns_input_dtype():
    x = jnp.asarray(RNG.standard_normal((2, 4, 3, 8)), jnp.bfloat16)
    norm = RMSNorm(1e-6)
    out = norm.apply(norm.init(jax.random.key(0), x), x)
    assert out.dtype == jnp.bfloat16
    rms = np.sqrt(np.mean(np.square(np.asarray(out, np.float32)), -1))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-2)


def test_modulate_forms_one_plus_scale_in_the_modulation_dtype():
    """Under autocast 1 + scale is a bf16 sum: for scale = 2^-9 it rounds back to 1."""
    x = jnp.ones((1, 2, 4), jnp.float32)
    scale = jnp.full((1, 4), 2.0 ** -9, jnp.bfloat16)
    out = modulate(x, jnp.zeros((1, 4), jnp.bfloat16), scale)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 1.0)
    np.testing.assert_allclose(modulate(x, jnp.zeros((1, 4)), scale.astype(jnp.float32)), 1 + 2.0 ** -9)


@pytest.mark.parametrize("stride", [(1, 1, 1), (2, 2, 2), (1, 2, 2)])
def test_conv3d_as_2d_equals_the_3d_convolution(stride):
    from hcjax.nn.conv import conv3d_as_2d

    x = jax.random.normal(jax.random.key(0), (2, 7, 10, 12, 4))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 5))
    want = jax.lax.conv_general_dilated(x, w, stride, "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    got = conv3d_as_2d(x, w, stride)
    assert got.shape == want.shape
    assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) < 1e-6
