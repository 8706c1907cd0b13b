"""Ulysses attention over the DiT's joint sequence ``[img; txt]``, per shard inside ``shard_map``.

As in the reference (HunyuanCustom's ``parallel_attention``): image q/k/v go by an all-to-all from sequence
shards to head shards (full image sequence, ``H / degree`` heads); text q/k/v are replicated, each shard takes the
head slice of its rank; one attention call over ``[img; txt]`` of those heads; the image output goes back by the
inverse all-to-all, the text output is gathered over heads (a ``psum`` of each shard's slice placed in zeros:
exact, and typed replicated), so every shard holds the full text output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hcjax.nn.attention import attention_head_major


def check_degree(num_heads: int, degree: int, axis: str = "sequence") -> None:
    """Raises unless the Ulysses degree divides the number of heads."""
    if num_heads % degree:
        ok = [d for d in range(2, num_heads + 1) if num_heads % d == 0]
        raise ValueError(f"Ulysses sequence parallelism over mesh axis {axis!r} of size {degree} needs the "
                         f"{num_heads} attention heads to divide evenly; use a degree in {ok}, or "
                         "sequence_parallel='ring' (any degree)")


def ulysses_attention(img_q, img_k, img_v, img_seg, txt_q, txt_k, txt_v, txt_seg, *, axis: str,
                      impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """Per shard of mesh axis ``axis``: image ``q, k, v [B, H, Lc, D]`` of this shard's chunk with ``img_seg
    [B, Lc]``; text ``q, k, v [B, H, Lt, D]`` and ``txt_seg [B, Lt]`` replicated. Returns ``(img_out [B, H, Lc,
    D], txt_out [B, H, Lt, D])``. ``impl``: the attention kernel (``hcjax.nn.attention``)."""
    degree = jax.lax.axis_size(axis)
    heads = img_q.shape[1]
    check_degree(heads, degree, axis)
    per_shard = heads // degree
    first = jax.lax.axis_index(axis) * per_shard

    def to_heads(x):  # [B, H, Lc, D] -> [B, H / degree, Li, D]
        return jax.lax.all_to_all(x, axis, split_axis=1, concat_axis=2, tiled=True)

    def own_heads(x):  # [B, H, Lt, D] -> [B, H / degree, Lt, D]
        return jax.lax.dynamic_slice_in_dim(x, first, per_shard, axis=1)

    q = jnp.concatenate([to_heads(img_q), own_heads(txt_q)], axis=2)
    k = jnp.concatenate([to_heads(img_k), own_heads(txt_k)], axis=2)
    v = jnp.concatenate([to_heads(img_v), own_heads(txt_v)], axis=2)
    seg = jnp.concatenate([jax.lax.all_gather(img_seg, axis, axis=1, tiled=True), txt_seg], axis=1)
    out = attention_head_major(q, k, v, seg, impl=impl)
    num_img = out.shape[2] - txt_q.shape[2]
    img_out = jax.lax.all_to_all(out[:, :, :num_img], axis, split_axis=2, concat_axis=1, tiled=True)
    txt_out = jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(txt_q), out[:, :, num_img:], first, axis=1)
    return img_out, jax.lax.psum(txt_out, axis)
