"""The attention kernels against hcjax's XLA attention: splash (the Pallas TPU kernel, run by the Pallas
interpreter on CPU), the cuDNN wrapper's segment logic (run through ``jax.nn.dot_product_attention``'s XLA
implementation, the same call with another backend), and what ``impl="auto"`` picks. Forward and gradients,
fp32 (rel. L2 < 1e-5) and bf16 (< 1e-2)."""

import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.nn.kernels import cudnn, splash_tpu
from tests.torch_reference import rel_l2

attn = importlib.import_module("hcjax.nn.attention")     # the module (hcjax.nn.attention is the function)

B, H, D = 2, 2, 32


def _qkv(length, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((B, H, length, D)), dtype) for _ in range(3))


def _padding_segments(length, valid):
    """The DiT's pattern: segment 0 = the first ``valid[b]`` tokens, segment 1 = the rest."""
    return jnp.asarray((np.arange(length)[None] >= np.asarray(valid)[:, None]).astype(np.int32))


def _scattered_segments(length, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 3, (B, length)).astype(np.int32))


def _vjp_errors(kernel, q, k, v, seg):
    """Relative errors of the output and of dq, dk, dv (random cotangent) against ``xla_attention``."""
    ct = jnp.asarray(np.random.default_rng(9).standard_normal(q.shape), q.dtype)
    want, want_vjp = jax.vjp(lambda *a: attn.xla_attention(*a, seg), q, k, v)
    got, got_vjp = jax.vjp(lambda *a: kernel(*a, seg), q, k, v)
    chex.assert_equal_shape([got, want])
    chex.assert_type(got, q.dtype)
    return [rel_l2(np.asarray(g, np.float32), np.asarray(w, np.float32))
            for g, w in zip((got, *got_vjp(ct)), (want, *want_vjp(ct)))]


@pytest.mark.parametrize("pattern", ["padding", "scattered", "none"])
def test_splash_matches_xla_fp32(pattern):
    length = 200                                   # not a multiple of the 128-wide blocks: padded inside
    seg = {"padding": _padding_segments(length, [170, 123]), "scattered": _scattered_segments(length),
           "none": None}[pattern]
    kernel = lambda q, k, v, s: splash_tpu.splash_attention(q, k, v, s, interpret=True)  # noqa: E731
    errors = _vjp_errors(kernel, *_qkv(length), seg)
    print(pattern, ["%.1e" % e for e in errors])
    assert max(errors) < 1e-5


def test_splash_bf16_and_blocks():
    length = 300
    seg = _padding_segments(length, [280, 290])
    q, k, v = _qkv(length, jnp.bfloat16)
    blocks = splash_tpu.SplashBlocks(q=128, kv=256, kv_compute=128, q_dkv=128, kv_dkv=128)
    assert blocks.fitted(length) == blocks and blocks.multiple == 256
    assert splash_tpu.SplashBlocks().fitted(200) == splash_tpu.SplashBlocks(256, 256, 256, 256, 256)
    for n in (513, 831, 1023):   # shorter than the default kv block: one block, each size divides the next
        b = splash_tpu.SplashBlocks().fitted(n)
        assert b.kv % b.kv_compute == 0 and b.kv_dkv % b.q_dkv == 0 and b.multiple >= n
    got = splash_tpu.splash_attention(q, k, v, seg, blocks=blocks, interpret=True)
    want = attn.xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), seg)
    chex.assert_type(got, jnp.bfloat16)
    assert rel_l2(np.asarray(got, np.float32), np.asarray(want)) < 1e-2


@pytest.mark.parametrize("length", [48, cudnn.DENSE_MASK_MAX + 8])
def test_cudnn_segment_logic(length):
    """Dense mask (short) and the two length-bounded calls (long: leading segment + reversed padding)."""
    valid = [length - 5, length - 17]
    seg = _padding_segments(length, valid)
    q, k, v = (x[:, :, :, :16] for x in _qkv(length))
    kernel = lambda q, k, v, s: cudnn.cudnn_attention(q, k, v, s, implementation="xla")  # noqa: E731
    if length > cudnn.DENSE_MASK_MAX:       # forward only at this length (the XLA reference is big on CPU)
        got, want = kernel(q, k, v, seg), attn.xla_attention(q, k, v, seg)
        assert rel_l2(got, want) < 1e-5
        # the padding rows attend among themselves only: they change when a padding key changes, the rest not
        k2 = k.at[:, :, -1].add(1.0)
        moved = np.abs(np.asarray(kernel(q, k2, v, seg) - got)).max(axis=(1, 3))
        assert (moved[0, :valid[0]] == 0).all() and (moved[0, valid[0]:] > 0).all()
        # another pattern (padding in the middle, as sequence parallelism pads the image): the XLA fallback
        middle = seg.at[:, 100:108].set(-1)
        assert rel_l2(kernel(q, k, v, middle), attn.xla_attention(q, k, v, middle)) < 1e-5
        return
    errors = _vjp_errors(kernel, q, k, v, seg) + _vjp_errors(kernel, q, k, v, _scattered_segments(length))
    assert max(errors) < 1e-5


def test_auto_choice_and_errors():
    f32, bf16 = jnp.float32, jnp.bfloat16
    assert attn.default_impl(f32, backend="cpu") == "xla"
    assert attn.default_impl(bf16, backend="tpu") == "splash"
    assert attn.default_impl(bf16, backend="gpu") == "cudnn"
    assert attn.default_impl(f32, backend="gpu") == "pallas_gpu"
    assert attn.default_impl(bf16, backend="tpu", plain=False) == "xla"          # VAE / text encoders
    assert attn.default_impl(f32, backend="gpu", self_attention=False) == "xla"
    q, k, v = _qkv(16)
    with pytest.raises(ValueError, match="impl='xla' only"):
        attn.attention_head_major(q, k, v, impl="splash", causal_block=4)
    with pytest.raises(ValueError, match="self-attention only"):
        attn.attention_head_major(q, k[:, :, :8], v[:, :, :8], impl="pallas_gpu")
    with pytest.raises(ValueError, match="unknown attention impl"):
        attn.attention(q, k, v, impl="flash")


def test_forced_splash_through_the_entry_point():
    """``attention(..., impl="splash")`` on a CPU runs the kernel in the interpreter: same numbers."""
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in _qkv(64))
    seg = _padding_segments(64, [50, 60])
    got = attn.attention(q, k, v, seg, impl="splash")
    assert rel_l2(got, attn.attention(q, k, v, seg, impl="xla")) < 1e-5
