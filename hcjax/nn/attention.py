"""The one attention entry point of hcjax.

``attention(q, k, v, segment_ids, impl)`` computes softmax(q k^T / sqrt(D)) v with fp32 logits and softmax,
where a query attends only to keys of its own segment. The reference's varlen flash attention splits each
sample into [image + valid text] and [padded text]; that is two segments here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")

# Keys of another segment get this logit; finite so that no row can turn into NaN.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
              impl: str = "auto") -> jax.Array:
    """Multi-head attention. ``q, k, v [B, L, H, D]``, ``segment_ids [B, L]`` int or None -> ``[B, L, H, D]``."""
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; choose one of {IMPLS}")
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"expected q [B, Lq, H, D] and k, v [B, Lk, H, D]; got {q.shape}, {k.shape}, {v.shape}")
    if segment_ids is not None and (segment_ids.shape != q.shape[:2] or q.shape[1] != k.shape[1]):
        raise ValueError(f"segment_ids {segment_ids.shape} must be [B, L] of a self-attention q {q.shape}")
    if impl == "auto":
        impl = "xla"
    if impl != "xla":
        raise NotImplementedError(f"attention impl {impl!r} is not available in this version; use impl='xla'")
    return xla_attention(q, k, v, segment_ids, query_chunk=_default_query_chunk(q, k))


def _default_query_chunk(q: jax.Array, k: jax.Array) -> int | None:
    """On CPU, long sequences run in query chunks so each chunk's logits stay in cache."""
    if jax.default_backend() != "cpu" or q.shape[1] * k.shape[1] <= 1024 * 1024:
        return None
    return 512


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                  query_chunk: int | None = None) -> jax.Array:
    """Plain XLA attention, optionally over query chunks (same numbers, bounded logits memory)."""
    length = q.shape[1]
    if query_chunk is None or query_chunk >= length:
        return _dense_attention(q, k, v, segment_ids, segment_ids)
    starts = range(0, length, query_chunk)
    outs = [
        _dense_attention(q[:, s:s + query_chunk], k, v,
                         None if segment_ids is None else segment_ids[:, s:s + query_chunk], segment_ids)
        for s in starts
    ]
    return jnp.concatenate(outs, axis=1)


@functools.partial(jax.named_call, name="dense_attention")
def _dense_attention(q, k, v, q_segments, kv_segments):
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if q_segments is not None:
        same = q_segments[:, None, :, None] == kv_segments[:, None, None, :]
        logits = jnp.where(same, logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)
