"""Attention over key blocks, merged with an online softmax (the arithmetic of ring attention).

A block's partial result is ``Stats(acc, m, l)`` per query row, all fp32: ``m`` the running max logit (a constant
without gradient: the result does not depend on it), ``l = sum exp(s - m)``, ``acc = sum exp(s - m) v``. Merging
rescales both to the larger max; ``finish`` returns ``acc / l``. Logits are scaled by 1/sqrt(D) and masked by
segment ids as in ``hcjax.nn.attention``.
"""

from __future__ import annotations

from typing import NamedTuple

import einops
import jax
import jax.numpy as jnp

# Logit of a key in another segment; finite, so a fully masked block gets weight exp(_MASKED - m) = 0 on merging.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


class Stats(NamedTuple):
    acc: jax.Array  # [B, H, Lq, D] fp32, unnormalised
    m: jax.Array    # [B, H, Lq, 1] fp32, max logit (no gradient)
    l: jax.Array    # [B, H, Lq, 1] fp32, softmax denominator at max m


def block_stats(q: jax.Array, k: jax.Array, v: jax.Array, q_seg: jax.Array, k_seg: jax.Array) -> Stats:
    """Partial attention of head-major ``q [B, H, Lq, D]`` over one key block ``k, v [B, H, Lk, D]``;
    ``q_seg [B, Lq]``, ``k_seg [B, Lk]``: a query sees the keys of its own segment only."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    mask = q_seg[:, None, :, None] == k_seg[:, None, None, :]
    logits = jnp.where(mask, logits, _MASKED)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    probs = jnp.exp(logits - m)
    acc = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return Stats(acc, m, jnp.sum(probs, axis=-1, keepdims=True))


def chunked_block_stats(q: jax.Array, k: jax.Array, v: jax.Array, q_seg: jax.Array, k_seg: jax.Array,
                        query_chunk: int | None) -> Stats:
    """``block_stats`` over chunks of ``query_chunk`` query rows (``lax.map``, each chunk rematerialised in the
    backward pass): logits memory bounded by one chunk. None or a chunk >= Lq: one block."""
    length = q.shape[2]
    if query_chunk is None or query_chunk >= length:
        return block_stats(q, k, v, q_seg, k_seg)
    pad = -length % query_chunk
    q = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0)))
    q_seg = jnp.pad(q_seg, ((0, 0), (0, pad)))
    qs = einops.rearrange(q, "b h (n c) d -> n b h c d", c=query_chunk)
    segs = einops.rearrange(q_seg, "b (n c) -> n b c", c=query_chunk)
    body = jax.checkpoint(lambda xs: block_stats(xs[0], k, v, xs[1], k_seg))
    stats = jax.lax.map(body, (qs, segs))
    return Stats(*(einops.rearrange(x, "n b h c d -> b h (n c) d")[:, :, :length] for x in stats))


def merge(a: Stats, b: Stats) -> Stats:
    """The stats of the union of two key sets."""
    m = jnp.maximum(a.m, b.m)
    wa, wb = jnp.exp(a.m - m), jnp.exp(b.m - m)
    return Stats(a.acc * wa + b.acc * wb, m, a.l * wa + b.l * wb)


def merge_across(s: Stats, axis: str) -> Stats:
    """``merge`` of the stats of every shard of mesh axis ``axis`` (inside ``shard_map``): the same result on
    every shard."""
    m = jax.lax.pmax(jax.lax.stop_gradient(s.m), axis)
    w = jnp.exp(s.m - m)
    return Stats(jax.lax.psum(s.acc * w, axis), m, jax.lax.psum(s.l * w, axis))


def finish(s: Stats, dtype) -> jax.Array:
    """The attention output ``acc / l`` in ``dtype``."""
    return (s.acc / s.l).astype(dtype)
