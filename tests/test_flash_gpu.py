"""Pallas GPU flash attention (hcjax.nn.kernels.flash_gpu), run in interpret mode on the CPU.

The reference is plain fp32 softmax attention in jnp (highest-precision dots); forward and ``jax.vjp``
gradients are compared in relative L2. One test lowers the kernels for CUDA (Triton IR), no GPU needed.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.nn.kernels.flash_gpu import block_ranges, flash_attention_gpu

SMALL = dict(block_q=16, block_k=16, block_bwd=(32, 16), interpret=True)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def reference(q, k, v, segment_ids):
    """fp32 softmax attention of head-major ``[B, H, L, D]`` with segment ids (or None)."""
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision="highest") / np.sqrt(q.shape[-1])
    if segment_ids is not None:
        same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
        logits = jnp.where(same, logits, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, axis=-1), v, precision="highest")


@functools.partial(jax.jit, static_argnames=("fn",))
def value_and_grads(fn, q, k, v, segment_ids, cotangent):
    """``fn(q, k, v, segment_ids)`` and the (dq, dk, dv) of ``cotangent``."""
    out, vjp = jax.vjp(lambda *qkv: fn(*qkv, segment_ids), q, k, v)
    return out, vjp(cotangent.astype(out.dtype))


def random_qkv(shape, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(shape), jnp.float32).astype(dtype) for _ in range(4))


def two_segments(lengths, total):
    """[image + valid text] = 0, [padded text] = 1, per sample."""
    return jnp.asarray(np.arange(total)[None, :] >= np.asarray(lengths)[:, None], jnp.int32)


def kernel(**kw):
    return functools.partial(flash_attention_gpu, **(SMALL | kw))


def check_against_reference(shape, segment_ids, dtype=jnp.float32, tol=1e-5, **kw):
    q, k, v, cot = random_qkv(shape, dtype)
    out, grads = value_and_grads(kernel(**kw), q, k, v, segment_ids, cot)
    ref_out, ref_grads = value_and_grads(reference, q, k, v, segment_ids, cot)
    chex.assert_shape([out, *grads], shape)
    chex.assert_type([out, *grads], dtype)
    errors = [rel_l2(a, b) for a, b in zip((out, *grads), (ref_out, *ref_grads))]
    assert max(errors) < tol, errors
    return errors


def test_contiguous_segments_forward_and_grads():
    """DiT pattern (two contiguous segments of per-sample lengths), L = 70 not a multiple of the blocks."""
    check_against_reference((2, 2, 70, 16), two_segments([50, 23], 70))


def test_random_segments_forward_and_grads():
    """Non-contiguous random ids, mixed block sizes, head dim 24 (padded to 32)."""
    segment_ids = jnp.asarray(np.random.default_rng(1).integers(0, 3, (2, 45)), jnp.int32)
    check_against_reference((2, 2, 45, 24), segment_ids, block_q=32, block_k=16, block_bwd=(16, 32))


@pytest.mark.parametrize("length", [40, 64])
def test_no_segments(length):
    """None: 40 needs padding (internal padding segment), 64 does not (unmasked kernels)."""
    check_against_reference((2, 2, length, 32), None)


def test_bf16_against_fp32_reference():
    errors = check_against_reference((2, 2, 70, 32), two_segments([64, 9], 70), dtype=jnp.bfloat16, tol=1e-2)
    assert errors[0] < 1e-2


def test_skipped_blocks_are_never_read():
    """Segment 1 fills whole key blocks of NaN k / v: segment 0's rows and their gradients stay exact, which
    holds only if those blocks are skipped (a masked NaN value would still poison the products)."""
    q, k, v, cot = random_qkv((1, 2, 64, 16))
    segment_ids = two_segments([32], 64)
    garbage = lambda x: x.at[:, :, 32:].set(jnp.nan)  # noqa: E731
    out, (dq, dk, dv) = value_and_grads(kernel(), q, garbage(k), garbage(v), segment_ids, cot)
    first = lambda x: x[:, :, :32]  # noqa: E731
    ref_out, ref_grads = value_and_grads(reference, *(first(x) for x in (q, k, v)), segment_ids[:, :32],
                                         first(cot))
    for got, want in zip((out, dq, dk, dv), (ref_out, *ref_grads)):
        assert np.isfinite(np.asarray(first(got))).all()
        assert rel_l2(first(got), want) < 1e-5
    assert np.isnan(np.asarray(out[:, :, 32:])).all()


def test_block_ranges_contiguous():
    segment_ids = jnp.asarray([[0] * 40 + [1] * 16 + [2] * 8], jnp.int32)  # 64 tokens, blocks of 16
    expected = [[0, 0, 2, 3], [0, 0, 2, 3], [0, 0, 0, 4], [2, 2, 2, 4]]  # no unmasked run: empty at lo
    np.testing.assert_array_equal(block_ranges(segment_ids, 16, 16)[0], expected)
    # Outer blocks of 32 over inner blocks of 16: the first sees blocks 0-1 unmasked and block 2 masked.
    np.testing.assert_array_equal(block_ranges(segment_ids, 32, 16)[0], [[0, 0, 2, 3], [0, 0, 0, 4]])


@pytest.mark.parametrize("outer, inner", [(16, 8), (8, 16), (8, 8)])
def test_block_ranges_cover_every_shared_segment(outer, inner):
    """Arbitrary ids: every inner block sharing an id lies in [lo, hi); [full_lo, full_hi) is unmasked."""
    ids = np.random.default_rng(2).integers(0, 4, (3, 64))
    ids[0] = np.sort(ids[0])  # one contiguous sample
    ranges = np.asarray(block_ranges(jnp.asarray(ids, jnp.int32), outer, inner))
    for b in range(ids.shape[0]):
        outer_blocks, inner_blocks = ids[b].reshape(-1, outer), ids[b].reshape(-1, inner)
        for i, (lo, full_lo, full_hi, hi) in enumerate(ranges[b]):
            assert lo <= full_lo <= full_hi <= hi
            for j, block in enumerate(inner_blocks):
                if np.intersect1d(outer_blocks[i], block).size:
                    assert lo <= j < hi
                if full_lo <= j < full_hi:
                    assert set(block) == set(outer_blocks[i]) and len(set(block)) == 1


def test_lowers_for_cuda():
    """Forward and backward lower to Triton kernels (default blocks, bf16, D = 128) for an abstract H100."""
    shape = jax.ShapeDtypeStruct((1, 2, 300, 128), jnp.bfloat16)
    segment_ids = jax.ShapeDtypeStruct((1, 300), jnp.int32)
    fn = jax.jit(functools.partial(value_and_grads, flash_attention_gpu))
    check = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    h100 = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h100)):
        exported = jax.export.export(fn, platforms=["cuda"], disabled_checks=[check])(
            shape, shape, shape, segment_ids, shape)
    assert exported.mlir_module().count("__gpu$xla.gpu.triton") == 3


def test_rejects_bad_inputs():
    q = jnp.zeros((1, 2, 16, 16))
    with pytest.raises(ValueError, match="powers of two"):
        flash_attention_gpu(q, q, q, block_q=24, interpret=True)
    with pytest.raises(ValueError, match="segment_ids"):
        flash_attention_gpu(q, q, q, jnp.zeros((1, 8), jnp.int32), interpret=True)
