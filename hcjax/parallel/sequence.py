"""Sequence parallelism of the DiT's joint attention over one mesh axis: the dispatch and the ``shard_map``.

The DiT's activations stay global arrays (``jit`` and sharding constraints place them); only the attention call is
a ``shard_map`` over the sequence axis, manual on that axis alone (batch or head shardings over other axes stay
automatic). The image tokens are split over the axis (padded to a multiple of its size; padded tokens form a
segment of their own, so no real token sees them), the text tokens are replicated. ``mode``:

* ``"ulysses"``: all-to-all to head shards (``hcjax.parallel.ulysses``); the degree must divide the heads;
* ``"ring"``: image K/V chunks around a ring with an online softmax (``hcjax.parallel.ring``);
* ``"none"``: one plain attention call.

Without a mesh in context (``jax.set_mesh``), or with the axis of size 1, every mode is the plain call.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hcjax.configs import SEQUENCE_PARALLEL_MODES
from hcjax.nn.attention import attention_head_major
from hcjax.parallel.mesh import axis_degree, context_mesh
from hcjax.parallel.ring import ring_attention
from hcjax.parallel.ulysses import check_degree, ulysses_attention


def joint_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, num_image: int, *,
                    mode: str = "none", axis: str = "sequence", impl: str = "auto") -> jax.Array:
    """Attention over the joint sequence ``[img (num_image tokens); txt]``, head-major ``q, k, v [B, H, L, D]``,
    ``segment_ids [B, L]`` -> ``[B, H, L, D]``; sequence-parallel over mesh axis ``axis`` when ``mode`` asks for
    it and the mesh in context has that axis with size > 1, otherwise ``attention_head_major``."""
    if mode not in SEQUENCE_PARALLEL_MODES:
        raise ValueError(f"unknown sequence_parallel mode {mode!r}; choose one of {SEQUENCE_PARALLEL_MODES}")
    if mode == "none" or axis_degree(axis) == 1:
        return attention_head_major(q, k, v, segment_ids, impl=impl)
    img, txt = zip(*((x[:, :, :num_image], x[:, :, num_image:]) for x in (q, k, v)))
    img_out, txt_out = sequence_parallel_attention(*img, *txt, segment_ids, mode=mode, axis=axis, impl=impl)
    return jnp.concatenate([img_out, txt_out], axis=2)


def sequence_parallel_attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, segment_ids: jax.Array | None = None,
                                *, mode: str, axis: str = "sequence", impl: str = "auto",
                                mesh=None) -> tuple[jax.Array, jax.Array]:
    """Attention of image ``q, k, v [B, H, Li, D]`` and text ``q, k, v [B, H, Lt, D]`` over ``[img; txt]`` with
    ``segment_ids [B, Li + Lt]`` (None: one segment), sharded over mesh axis ``axis`` of ``mesh`` (default: the
    mesh in context). Returns global ``(img_out [B, H, Li, D], txt_out [B, H, Lt, D])``. ``impl`` picks the
    Ulysses attention kernel; the ring computes its blocks in XLA."""
    mesh = context_mesh() if mesh is None else mesh
    degree = axis_degree(axis, mesh)
    if mesh is None or degree == 1:
        raise ValueError(f"sequence parallelism needs a mesh with an axis {axis!r} of size > 1 (jax.set_mesh)")
    if mode not in ("ulysses", "ring"):
        raise ValueError(f"sequence parallel mode must be 'ulysses' or 'ring', got {mode!r}")
    batch, heads, num_img, _ = img_q.shape
    if mode == "ulysses":
        check_degree(heads, degree, axis)
    if segment_ids is None:
        segment_ids = jnp.zeros((batch, num_img + txt_q.shape[2]), jnp.int32)
    img_seg, txt_seg = segment_ids[:, :num_img], segment_ids[:, num_img:]

    pad = -num_img % degree
    if pad:  # padded image tokens: a segment below every real one
        pad_id = jnp.min(segment_ids) - 1
        img_q, img_k, img_v = (jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (img_q, img_k, img_v))
        img_seg = jnp.pad(img_seg, ((0, 0), (0, pad)), constant_values=pad_id)

    if mode == "ulysses":
        per_shard = functools.partial(ulysses_attention, axis=axis, impl=impl)
    else:
        per_shard = functools.partial(ring_attention, axis=axis)
    tokens, rep = P(None, None, axis, None), P()
    in_specs = (tokens, tokens, tokens, P(None, axis), rep, rep, rep, rep)
    # check_vma off: Pallas kernels (splash) called in here declare no per-axis variance of their outputs
    fn = jax.shard_map(per_shard, mesh=mesh, in_specs=in_specs, out_specs=(tokens, rep), axis_names={axis},
                       check_vma=False)
    img_out, txt_out = fn(img_q, img_k, img_v, img_seg, txt_q, txt_k, txt_v, txt_seg)
    return img_out[:, :, :num_img], txt_out
