"""Ring attention over the DiT's joint sequence ``[img; txt]``, per shard inside ``shard_map``.

Each shard keeps its chunk of image queries; the image K/V chunks (with their segment ids) travel around the ring
(``ppermute``, shard r -> r + 1) so every shard sees every chunk once, merged by an online softmax in fp32. Text
K/V are replicated: attended locally, once. Text queries: each shard attends them to its own image chunk, the
shards' partial results are merged by an all-reduce (``pmax``, ``psum`` of the rescaled sums), then merged with the
text-key part computed locally. So the text output is identical on every shard and the text stream stays
replicated; its cost is one extra all-reduce of ``[B, H, L_txt, D]`` per block.
"""

from __future__ import annotations

import jax

from hcjax.parallel.online_softmax import chunked_block_stats, finish, merge, merge_across

# Budget for one query chunk's fp32 logits (see ``query_chunk``).
_LOGITS_BYTES = 256 * 2**20


def query_chunk(shape: tuple[int, int, int, int], kv_length: int, budget: int = _LOGITS_BYTES) -> int | None:
    """Query rows per chunk so that the logits ``[B, H, chunk, kv_length]`` fp32 stay within ``budget``; None
    when all rows fit."""
    batch, heads, length, _ = shape
    rows = max(16, budget // (4 * batch * heads * kv_length))
    return None if rows >= length else rows


def ring_attention(img_q, img_k, img_v, img_seg, txt_q, txt_k, txt_v, txt_seg, *, axis: str,
                   chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Per shard of mesh axis ``axis``: image ``q, k, v [B, H, Lc, D]`` of this shard's chunk with ``img_seg
    [B, Lc]``; text ``q, k, v [B, H, Lt, D]`` and ``txt_seg [B, Lt]`` replicated. Returns ``(img_out [B, H, Lc,
    D], txt_out [B, H, Lt, D])``. ``chunk``: query rows per block computation (default: by a memory budget)."""
    degree = jax.lax.axis_size(axis)
    chunk = query_chunk(img_q.shape, img_k.shape[2]) if chunk is None else chunk
    ring = [(i, (i + 1) % degree) for i in range(degree)]

    img = chunked_block_stats(img_q, txt_k, txt_v, img_seg, txt_seg, chunk)
    k, v, seg = img_k, img_v, img_seg
    for step in range(degree):
        img = merge(img, chunked_block_stats(img_q, k, v, img_seg, seg, chunk))
        if step + 1 < degree:
            k, v, seg = jax.lax.ppermute((k, v, seg), axis, ring)

    txt_img = merge_across(chunked_block_stats(txt_q, img_k, img_v, txt_seg, img_seg, chunk), axis)
    txt = merge(txt_img, chunked_block_stats(txt_q, txt_k, txt_v, txt_seg, txt_seg, chunk))
    return finish(img, img_q.dtype), finish(txt, txt_q.dtype)
