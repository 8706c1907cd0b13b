"""Flash attention for NVIDIA GPUs: Pallas (Triton) kernels, forward and backward, with segment ids.

``flash_attention_gpu(q, k, v, segment_ids)`` computes softmax(q k^T / sqrt(D)) v on head-major
``[B, H, L, D]`` self-attention, where a query sees only the keys of its own segment.

Design:

* Forward (FlashAttention-2): one program per (query block, batch, head) streams over key blocks with an
  online softmax; logits, running max / sum and the output accumulator are fp32 (base-2 exponentials, the
  scale folded with log2(e)). It writes the output and the base-2 logsumexp of every row.
* Backward: ``delta = rowsum(o * do)`` in XLA, then a dk/dv kernel (one program per key block, streaming over
  query blocks) and a dq kernel (one program per query block, streaming over key blocks), both recomputing the
  probabilities from the saved logsumexp.
* Block skipping: ``block_ranges`` gives, for every outer block, the span ``[lo, hi)`` of inner blocks whose
  [min, max] segment-id range meets the outer block's one (other blocks hold no key of a shared segment), and
  inside it a run ``[full_lo, full_hi)`` of blocks that all carry the outer block's single id (no mask
  needed). Exact skipping for contiguous segments (hcjax's [image + text | padding] pattern); still correct
  for arbitrary ids, as every block outside ``[lo, hi)`` is fully masked.
* Any ``L``: the wrapper pads to a multiple of the blocks; padded tokens get a segment id no real token has,
  so they attend only among themselves (finite, never NaN) and are sliced off. ``D`` is zero-padded to a
  power of two >= 16 (Triton's dot), the scale stays 1/sqrt(D).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import einops
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
LOG2E = math.log2(math.e)
MIN_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static kernel parameters (hashable: a ``custom_vjp`` non-differentiable argument)."""

    block_q: int
    block_k: int
    block_bwd_outer: int
    block_bwd_inner: int
    num_warps: int | None
    num_stages: int
    interpret: bool
    sm_scale: float

    @property
    def max_block(self) -> int:
        return max(self.block_q, self.block_k, self.block_bwd_outer, self.block_bwd_inner)


def flash_attention_gpu(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None, *,
                        block_q: int = 128, block_k: int = 64, num_warps: int | None = None, num_stages: int = 2,
                        interpret: bool = False, block_bwd: tuple[int, int] = (128, 32)) -> jax.Array:
    """Segment-masked softmax attention of head-major ``q, k, v [B, H, L, D]`` -> ``[B, H, L, D]`` (q.dtype).

    ``segment_ids [B, L]`` int or None (one segment). Block sizes are powers of two (>= 16 on a GPU);
    ``block_bwd = (outer, inner)`` are the backward kernels' blocks (the dk/dv kernel's key block / its query
    block; the dq kernel's query block / its key block). ``interpret=True`` runs the kernels on any backend.
    """
    _check_inputs(q, k, v, segment_ids)
    batch, _, length, head_dim = q.shape
    cfg = _Config(*(_block(b, length) for b in (block_q, block_k, *block_bwd)), num_warps=num_warps,
                  num_stages=num_stages, interpret=interpret, sm_scale=head_dim**-0.5)
    padded_len = -(-length // cfg.max_block) * cfg.max_block
    padded_dim = max(MIN_BLOCK, pl.next_power_of_2(head_dim))
    if batch * q.shape[1] * padded_len * padded_dim >= 2**31:
        raise ValueError(f"{q.shape} padded to L={padded_len}, D={padded_dim} has 2^31 elements or more; the "
                         "Triton kernels index with int32: split the batch or the heads")
    widths = ((0, 0), (0, 0), (0, padded_len - length), (0, padded_dim - head_dim))
    q, k, v = (x if x.shape[2:] == (padded_len, padded_dim) else jnp.pad(x, widths) for x in (q, k, v))
    out = _flash(q, k, v, _padded_segments(segment_ids, batch, length, padded_len), cfg)
    return out[:, :, :length, :head_dim]


def _check_inputs(q, k, v, segment_ids) -> None:
    """Shapes and dtypes of a head-major self-attention."""
    if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"expected q, k, v of one shape [B, H, L, D]; got {q.shape}, {k.shape}, {v.shape}")
    if not (q.dtype == k.dtype == v.dtype) or not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(f"q, k, v must share one float dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if segment_ids is not None and segment_ids.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"segment_ids {segment_ids.shape} must be [B, L] = {(q.shape[0], q.shape[2])}")


def _block(block: int, length: int) -> int:
    """A power-of-two block size, no larger than needed for ``length`` tokens."""
    if block < 1 or block & (block - 1):
        raise ValueError(f"block sizes must be powers of two; got {block}")
    return min(block, max(MIN_BLOCK, pl.next_power_of_2(length)))


def _padded_segments(segment_ids, batch: int, length: int, padded_len: int) -> jax.Array | None:
    """``[B, padded_len]`` int32 ids, padding tokens with an id of their own (max + 1); None if nothing is
    masked."""
    if segment_ids is None and padded_len == length:
        return None
    if segment_ids is None:
        segment_ids = jnp.zeros((batch, length), jnp.int32)
    segment_ids = segment_ids.astype(jnp.int32)
    pad_id = jnp.max(segment_ids) + 1
    return jnp.pad(segment_ids, ((0, 0), (0, padded_len - length)), constant_values=pad_id)


def block_ranges(segment_ids: jax.Array, block_outer: int, block_inner: int) -> jax.Array:
    """``[B, L / block_outer, 4]`` int32 ``(lo, full_lo, full_hi, hi)``: the inner blocks an outer block visits.

    Inner blocks outside ``[lo, hi)`` share no segment id with the outer block (their [min, max] id ranges do
    not meet). Blocks in ``[full_lo, full_hi)`` (within ``[lo, hi)``; empty when there are none) carry only the
    outer block's single id, so they need no mask. ``L`` must be a multiple of both blocks.
    """
    outer_min, outer_max = _block_min_max(segment_ids, block_outer)
    inner_min, inner_max = _block_min_max(segment_ids, block_inner)
    num_inner = inner_min.shape[1]
    index = jnp.arange(num_inner, dtype=jnp.int32)
    meets = (inner_min[:, None, :] <= outer_max[:, :, None]) & (inner_max[:, None, :] >= outer_min[:, :, None])
    lo = jnp.min(jnp.where(meets, index, num_inner), axis=-1)
    hi = jnp.max(jnp.where(meets, index + 1, 0), axis=-1)
    uniform_inner = (inner_min == inner_max)[:, None, :] & (inner_min[:, None, :] == outer_min[:, :, None])
    full = uniform_inner & (outer_min == outer_max)[:, :, None]
    full_lo = jnp.where(full.any(-1), jnp.argmax(full, axis=-1), lo).astype(jnp.int32)
    after = ~full & (index >= full_lo[..., None])
    full_hi = jnp.where(after.any(-1), jnp.argmax(after, axis=-1), num_inner).astype(jnp.int32)
    full_hi = jnp.where(full.any(-1), full_hi, lo)
    return jnp.stack([lo, full_lo, full_hi, hi], axis=-1).astype(jnp.int32)


def _block_min_max(segment_ids: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    """Per-block min and max id, each ``[B, L / block]``."""
    blocks = einops.rearrange(segment_ids, "b (n k) -> b n k", k=block)
    return blocks.min(-1), blocks.max(-1)


# ---------------------------------------------------------------------------------------------- autodiff


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, segments, cfg: _Config):
    """Attention on padded inputs (L a multiple of every block, D a power of two)."""
    return _forward(q, k, v, segments, cfg)[0]


def _flash_fwd(q, k, v, segments, cfg: _Config):
    out, lse = _forward(q, k, v, segments, cfg)
    return out, (q, k, v, segments, out, lse)


def _flash_bwd(cfg: _Config, residuals, d_out):
    q, k, v, segments, out, lse = residuals
    delta = jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32), axis=-1)
    dq, dk, dv = _backward(q, k, v, segments, d_out.astype(q.dtype), lse, delta, cfg)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---------------------------------------------------------------------------------------------- shared


def _precision(dtype) -> lax.Precision | None:
    """fp32 inputs get full-precision (IEEE, not TF32) dots; 16-bit inputs the default."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _logits(a, b, a_segments, b_segments, scale2: float, precision):
    """Base-2 logits ``a b^T * scale * log2(e)`` (fp32), pairs of different segments set to ``MASK_VALUE``."""
    s = plgpu.dot(a, b, trans_b=True, precision=precision) * scale2
    if a_segments is None:
        return s
    return jnp.where(a_segments[:, None] == b_segments[None, :], s, MASK_VALUE)


def _three_loops(ranges_ref, num_blocks: int, step, carry):
    """Runs ``step(j, carry, masked)`` over the inner blocks: all of them without ranges, else masked
    ``[lo, full_lo)``, unmasked ``[full_lo, full_hi)``, masked ``[full_hi, hi)``."""
    if ranges_ref is None:
        return lax.fori_loop(0, num_blocks, functools.partial(step, masked=False), carry)
    lo, full_lo, full_hi, hi = (ranges_ref[i] for i in range(4))
    carry = lax.fori_loop(lo, full_lo, functools.partial(step, masked=True), carry)
    carry = lax.fori_loop(full_lo, full_hi, functools.partial(step, masked=False), carry)
    return lax.fori_loop(full_hi, hi, functools.partial(step, masked=True), carry)


def _span(j, block: int) -> pl.Slice:
    """Rows ``[j * block, (j + 1) * block)``."""
    return pl.ds(pl.multiple_of(j * block, block), block)


def _compiler_params(cfg: _Config, head_dim: int) -> plgpu.CompilerParams:
    """``cfg``'s warps (default 4 up to head dim 64, else 8) and pipeline stages."""
    warps = cfg.num_warps or (4 if head_dim <= 64 else 8)
    return plgpu.CompilerParams(num_warps=warps, num_stages=cfg.num_stages)


def _specs_per_head(block: int | None, head_dim: int, length: int):
    """BlockSpec of ``[B, H, L, D]`` for grid ``(i, b, h)``: block ``i`` of ``block`` rows, or all rows."""
    if block is None:
        return pl.BlockSpec((None, None, length, head_dim), lambda i, b, h: (b, h, 0, 0))
    return pl.BlockSpec((None, None, block, head_dim), lambda i, b, h: (b, h, i, 0))


def _row_spec(block: int | None, length: int):
    """BlockSpec of per-row ``[B, H, L]`` statistics for grid ``(i, b, h)``."""
    if block is None:
        return pl.BlockSpec((None, None, length), lambda i, b, h: (b, h, 0))
    return pl.BlockSpec((None, None, block), lambda i, b, h: (b, h, i))


def _segment_inputs(segments, ranges, outer: int, length: int):
    """(ranges, outer-block ids, all ids) and their BlockSpecs, or Nones without segments."""
    if segments is None:
        return (None, None, None), (None, None, None)
    specs = (pl.BlockSpec((None, None, 4), lambda i, b, h: (b, i, 0)),
             pl.BlockSpec((None, outer), lambda i, b, h: (b, i)),
             pl.BlockSpec((None, length), lambda i, b, h: (b, 0)))
    return (ranges, segments, segments), specs


# ---------------------------------------------------------------------------------------------- forward


def _forward(q, k, v, segments, cfg: _Config) -> tuple[jax.Array, jax.Array]:
    """Output ``[B, H, L, D]`` and base-2 logsumexp ``[B, H, L]`` (fp32)."""
    batch, heads, length, head_dim = q.shape
    ranges = None if segments is None else block_ranges(segments, cfg.block_q, cfg.block_k)
    seg_args, seg_specs = _segment_inputs(segments, ranges, cfg.block_q, length)
    kernel = functools.partial(_forward_kernel, block_k=cfg.block_k, scale2=cfg.sm_scale * LOG2E,
                               precision=_precision(q.dtype))
    return pl.pallas_call(
        kernel,
        grid=(length // cfg.block_q, batch, heads),
        in_specs=[seg_specs[0], _specs_per_head(cfg.block_q, head_dim, length),
                  _specs_per_head(None, head_dim, length), _specs_per_head(None, head_dim, length),
                  seg_specs[1], seg_specs[2]],
        out_specs=[_specs_per_head(cfg.block_q, head_dim, length), _row_spec(cfg.block_q, length)],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                   jax.ShapeDtypeStruct((batch, heads, length), jnp.float32)],
        compiler_params=_compiler_params(cfg, head_dim),
        interpret=cfg.interpret,
        name="flash_gpu_forward",
    )(seg_args[0], q, k, v, seg_args[1], seg_args[2])


def _forward_kernel(ranges_ref, q_ref, k_ref, v_ref, q_seg_ref, k_seg_ref, o_ref, lse_ref, *, block_k: int,
                    scale2: float, precision):
    """One query block: online softmax over the key blocks of ``ranges_ref``."""
    q = q_ref[...]
    q_segments = None if q_seg_ref is None else q_seg_ref[...]

    def step(j, carry, masked):
        acc, row_max, row_sum = carry
        span = _span(j, block_k)
        k_segments = k_seg_ref[span] if masked else None
        s = _logits(q, k_ref[span, :], q_segments if masked else None, k_segments, scale2, precision)
        new_max = jnp.maximum(row_max, s.max(axis=1))
        rescale = jnp.exp2(row_max - new_max)
        p = jnp.exp2(s - new_max[:, None])
        v = v_ref[span, :]
        acc = acc * rescale[:, None] + plgpu.dot(p.astype(v.dtype), v, precision=precision)
        return acc, new_max, row_sum * rescale + p.sum(axis=1)

    rows, head_dim = q.shape
    init = (jnp.zeros((rows, head_dim), jnp.float32), jnp.full((rows,), -jnp.inf, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    acc, row_max, row_sum = _three_loops(ranges_ref, k_ref.shape[0] // block_k, step, init)
    plgpu.store(o_ref, (acc / row_sum[:, None]).astype(o_ref.dtype))
    plgpu.store(lse_ref, row_max + jnp.log2(row_sum))


# ---------------------------------------------------------------------------------------------- backward


def _backward(q, k, v, segments, d_out, lse, delta, cfg: _Config):
    """``dq, dk, dv`` from the saved base-2 logsumexp and ``delta = rowsum(o * do)``."""
    outer, inner = cfg.block_bwd_outer, cfg.block_bwd_inner
    ranges = None if segments is None else block_ranges(segments, outer, inner)
    dk, dv = _backward_dkv(q, k, v, segments, ranges, d_out, lse, delta, cfg)
    dq = _backward_dq(q, k, v, segments, ranges, d_out, lse, delta, cfg)
    return dq, dk, dv


def _backward_dkv(q, k, v, segments, ranges, d_out, lse, delta, cfg: _Config):
    """dk, dv: one program per key block of ``block_bwd_outer`` rows."""
    batch, heads, length, head_dim = q.shape
    outer, inner = cfg.block_bwd_outer, cfg.block_bwd_inner
    seg_args, seg_specs = _segment_inputs(segments, ranges, outer, length)
    full, rows = _specs_per_head(None, head_dim, length), _row_spec(None, length)
    block = _specs_per_head(outer, head_dim, length)
    kernel = functools.partial(_dkv_kernel, block_q=inner, scale2=cfg.sm_scale * LOG2E, sm_scale=cfg.sm_scale,
                               precision=_precision(q.dtype))
    return pl.pallas_call(
        kernel,
        grid=(length // outer, batch, heads),
        in_specs=[seg_specs[0], full, block, block, full, rows, rows, seg_specs[1], seg_specs[2]],
        out_specs=[block, block],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_compiler_params(cfg, head_dim),
        interpret=cfg.interpret,
        name="flash_gpu_backward_dkv",
    )(seg_args[0], q, k, v, d_out, lse, delta, seg_args[1], seg_args[2])


def _dkv_kernel(ranges_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, k_seg_ref, q_seg_ref, dk_ref,
                dv_ref, *, block_q: int, scale2: float, sm_scale: float, precision):
    """One key block: accumulate dk, dv over the query blocks of ``ranges_ref``."""
    k, v = k_ref[...], v_ref[...]
    k_segments = None if k_seg_ref is None else k_seg_ref[...]

    def step(i, carry, masked):  # transposed [keys, queries] tiles: no register transposes
        dk, dv = carry
        span = _span(i, block_q)
        q, d_out = q_ref[span, :], do_ref[span, :]
        q_segments = q_seg_ref[span] if masked else None
        s_t = _logits(k, q, k_segments if masked else None, q_segments, scale2, precision)
        p_t = jnp.exp2(s_t - lse_ref[span][None, :])
        dv = dv + plgpu.dot(p_t.astype(d_out.dtype), d_out, precision=precision)
        dp_t = plgpu.dot(v, d_out, trans_b=True, precision=precision)
        ds_t = p_t * (dp_t - delta_ref[span][None, :])
        return dk + plgpu.dot(ds_t.astype(q.dtype), q, precision=precision), dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = _three_loops(ranges_ref, q_ref.shape[0] // block_q, step, (zeros, zeros))
    plgpu.store(dk_ref, (dk * sm_scale).astype(dk_ref.dtype))
    plgpu.store(dv_ref, dv.astype(dv_ref.dtype))


def _backward_dq(q, k, v, segments, ranges, d_out, lse, delta, cfg: _Config):
    """dq: one program per query block of ``block_bwd_outer`` rows."""
    batch, heads, length, head_dim = q.shape
    outer, inner = cfg.block_bwd_outer, cfg.block_bwd_inner
    seg_args, seg_specs = _segment_inputs(segments, ranges, outer, length)
    full, block, rows = (_specs_per_head(None, head_dim, length), _specs_per_head(outer, head_dim, length),
                         _row_spec(outer, length))
    kernel = functools.partial(_dq_kernel, block_k=inner, scale2=cfg.sm_scale * LOG2E, sm_scale=cfg.sm_scale,
                               precision=_precision(q.dtype))
    return pl.pallas_call(
        kernel,
        grid=(length // outer, batch, heads),
        in_specs=[seg_specs[0], block, full, full, block, rows, rows, seg_specs[1], seg_specs[2]],
        out_specs=block,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_compiler_params(cfg, head_dim),
        interpret=cfg.interpret,
        name="flash_gpu_backward_dq",
    )(seg_args[0], q, k, v, d_out, lse, delta, seg_args[1], seg_args[2])


def _dq_kernel(ranges_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, k_seg_ref, dq_ref, *,
               block_k: int, scale2: float, sm_scale: float, precision):
    """One query block: accumulate dq over the key blocks of ``ranges_ref``."""
    q, d_out = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    q_segments = None if q_seg_ref is None else q_seg_ref[...]

    def step(j, dq, masked):
        span = _span(j, block_k)
        k, v = k_ref[span, :], v_ref[span, :]
        k_segments = k_seg_ref[span] if masked else None
        s = _logits(q, k, q_segments if masked else None, k_segments, scale2, precision)
        p = jnp.exp2(s - lse[:, None])
        dp = plgpu.dot(d_out, v, trans_b=True, precision=precision)
        ds = p * (dp - delta[:, None])
        return dq + plgpu.dot(ds.astype(k.dtype), k, precision=precision)

    dq = _three_loops(ranges_ref, k_ref.shape[0] // block_k, step, jnp.zeros(q.shape, jnp.float32))
    plgpu.store(dq_ref, (dq * sm_scale).astype(dq_ref.dtype))
