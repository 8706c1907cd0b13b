"""The one attention entry point of hcjax.

``attention(q, k, v, segment_ids, impl)`` computes softmax(q k^T / sqrt(D)) v with fp32 logits and softmax,
where a query attends only to keys of its own segment. The reference's varlen flash attention splits each
sample into [image + valid text] and [padded text]; that is two segments here.
"""

from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")

# Keys of another segment get this logit; finite so that no row can turn into NaN.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
              impl: str = "auto") -> jax.Array:
    """Multi-head attention. ``q, k, v [B, L, H, D]``, ``segment_ids [B, L]`` int or None -> ``[B, L, H, D]``."""
    if q.ndim != 4 or k.ndim != 4:
        raise ValueError(f"expected q [B, Lq, H, D] and k, v [B, Lk, H, D]; got {q.shape}, {k.shape}, {v.shape}")
    to_heads = functools.partial(einops.rearrange, pattern="b l h d -> b h l d")
    out = attention_head_major(to_heads(q), to_heads(k), to_heads(v), segment_ids, impl)
    return einops.rearrange(out, "b h l d -> b l h d")


def attention_head_major(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                         impl: str = "auto", causal_block: int | None = None,
                         kv_mask: jax.Array | None = None) -> jax.Array:
    """``attention`` on head-major ``q, k, v [B, H, L, D]`` (the kernels' own layout) -> ``[B, H, L, D]``.

    ``causal_block``: tokens form consecutive blocks of this size (video frames; 1 for a causal language
    model); a query sees its own and earlier blocks only. ``kv_mask [B, Lk]`` (True = attend) hides keys
    (the padding of a text encoder's attention mask); it combines with the other masks."""
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; choose one of {IMPLS}")
    if q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"expected q [B, H, Lq, D] and k, v [B, H, Lk, D]; got {q.shape}, {k.shape}, {v.shape}")
    if segment_ids is not None and (segment_ids.shape != (q.shape[0], q.shape[2]) or q.shape[2] != k.shape[2]):
        raise ValueError(f"segment_ids {segment_ids.shape} must be [B, L] of a self-attention q {q.shape}")
    if kv_mask is not None and kv_mask.shape != (k.shape[0], k.shape[2]):
        raise ValueError(f"kv_mask {kv_mask.shape} must be [B, Lk] = {(k.shape[0], k.shape[2])}")
    if impl == "auto":
        impl = default_impl(q.dtype, self_attention=q.shape[2] == k.shape[2],
                            plain=causal_block is None and kv_mask is None)
    if impl == "xla":
        per_head, query_chunk = _default_xla_plan(q.shape, k.shape[2])
        return xla_attention(q, k, v, segment_ids, query_chunk=query_chunk, causal_block=causal_block,
                             kv_mask=kv_mask, per_head=per_head)
    if causal_block is not None or kv_mask is not None:
        raise ValueError(f"causal_block / kv_mask are supported by impl='xla' only, not {impl!r}")
    if impl == "cudnn":
        from hcjax.nn.kernels.cudnn import cudnn_attention

        return cudnn_attention(q, k, v, segment_ids)
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"impl={impl!r} is self-attention only (Lq {q.shape[2]} != Lk {k.shape[2]}); use "
                         "impl='xla' or 'cudnn'")
    if impl == "splash":
        from hcjax.nn.kernels.splash_tpu import splash_attention

        return splash_attention(q, k, v, segment_ids, interpret=jax.default_backend() != "tpu")
    from hcjax.nn.kernels.flash_gpu import flash_attention_gpu

    return flash_attention_gpu(q, k, v, segment_ids, interpret=jax.default_backend() != "gpu")


def default_impl(dtype, self_attention: bool = True, plain: bool = True, backend: str | None = None) -> str:
    """What ``impl="auto"`` picks: splash on TPU; on GPU cuDNN for fp16 / bf16 (its fused kernel's dtypes) and
    the Pallas kernel for fp32 self-attention; XLA on CPU and wherever a block-causal mask or a key mask is
    asked for (the VAE, the text encoders)."""
    backend = backend or jax.default_backend()
    if not plain or backend not in ("tpu", "gpu"):
        return "xla"
    if backend == "tpu":
        return "splash" if self_attention else "xla"
    if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "pallas_gpu" if self_attention else "xla"


def _default_xla_plan(shape: tuple[int, int, int, int], kv_length: int) -> tuple[bool, int | None]:
    """``(per_head, query_chunk)`` for ``xla_attention``: the fp32 logits of one step stay within a budget.

    On CPU the budget is 24 MiB (a server's L3): at 2,368 tokens x 4 heads, steps of 296-592 query rows ran
    10% faster than 148 rows and 1,184 rows (45 MB) 60% slower. There, once one head's logits reach 4 MiB,
    the heads go one at a time, each as plain 2D products (2-3% off a whole DiT forward at that size; short
    sequences, as in the text encoders, stay one batched step). Elsewhere the budget is 512 MiB over all heads
    (a 119k-token video would otherwise need terabytes). A divisor of the length is preferred: no padded rows.
    """
    batch, heads, length, _ = shape
    cpu = jax.default_backend() == "cpu"
    head_bytes = 4 * length * kv_length
    per_head = cpu and batch * heads > 1 and head_bytes >= 4 * 2**20
    rows_bytes = 4 * kv_length * (1 if per_head else batch * heads)
    target = max(16, (24 if cpu else 512) * 2**20 // rows_bytes)
    if target >= length:
        return per_head, None
    divisors = [c for c in range(target // 2, 2 * target + 1) if length % c == 0]
    return per_head, (min(divisors, key=lambda c: abs(c - target)) if divisors else target)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                  query_chunk: int | None = None, causal_block: int | None = None,
                  kv_mask: jax.Array | None = None, per_head: bool = False) -> jax.Array:
    """Plain XLA attention on head-major ``[B, H, L, D]``.

    With ``query_chunk`` the queries are processed in a loop of chunks, and with ``per_head`` one (sample,
    head) at a time (same numbers; logits memory bounded by one step). Segment masking is skipped at run time
    when every sample is a single segment. ``causal_block`` groups the tokens into consecutive blocks of that
    many (e.g. the frames of a video) and lets a query see the keys of its own and earlier blocks only.
    ``kv_mask [B, Lk]`` hides keys.
    """
    mask_fn = None if causal_block is None else _block_causal_mask(causal_block, k.shape[2])
    if kv_mask is not None:
        mask_fn = _both(mask_fn, lambda start, n: kv_mask.astype(bool)[:, None, None, :])
    run = _per_head if per_head else _chunked
    if segment_ids is None:
        return run(q, k, v, mask_fn, query_chunk)
    if causal_block is not None:
        raise ValueError("causal_block and segment_ids cannot be combined")
    uniform = jnp.all(segment_ids == segment_ids[:, :1])
    segments = _both(mask_fn, _segment_mask(segment_ids, q.shape[2], query_chunk))
    return jax.lax.cond(uniform, lambda: run(q, k, v, mask_fn, query_chunk),
                        lambda: run(q, k, v, segments, query_chunk))


def _both(a, b):
    """The conjunction of two mask functions (either may be None)."""
    if a is None or b is None:
        return a or b
    return lambda start, n: a(start, n) & b(start, n)


def _segment_mask(segment_ids, length, query_chunk):
    """``mask(start, n) -> [B, 1, n, Lk]``: query ``start + i`` and key ``j`` share a segment."""
    pad = 0 if query_chunk is None else -length % query_chunk
    q_segments = jnp.pad(segment_ids, ((0, 0), (0, pad)), constant_values=-1)

    def mask(start, n):
        rows = jax.lax.dynamic_slice_in_dim(q_segments, start, n, axis=1)
        return rows[:, None, :, None] == segment_ids[:, None, None, :]

    return mask


def _block_causal_mask(block, kv_length):
    """``mask(start, n) -> [1, 1, n, Lk]``: key ``j``'s block is not after query ``start + i``'s block."""
    def mask(start, n):
        q_block = (start + jnp.arange(n)) // block
        kv_block = jnp.arange(kv_length) // block
        return (kv_block[None, :] <= q_block[:, None])[None, None]

    return mask


def _per_head(q, k, v, mask_fn, query_chunk):
    """``_chunked`` for one (sample, head) at a time, in a loop; masks are cut to the step's sample."""
    batch, heads = q.shape[:2]

    def one(args):
        index, q1, k1, v1 = args  # index: sample * heads + head; q1, k1, v1 [L, D]
        sample_mask = None if mask_fn is None else _for_sample(mask_fn, index // heads)
        return _chunked(q1[None, None], k1[None, None], v1[None, None], sample_mask, query_chunk)[0, 0]

    flat = functools.partial(einops.rearrange, pattern="b h l d -> (b h) l d")
    out = jax.lax.map(one, (jnp.arange(batch * heads), flat(q), flat(k), flat(v)))
    return einops.rearrange(out, "(b h) l d -> b h l d", b=batch)


def _for_sample(mask_fn, sample):
    """``mask_fn`` with its batch axis cut to ``sample`` (a mask without one is returned as it is)."""
    def mask(start, n):
        m = mask_fn(start, n)
        return m if m.shape[0] == 1 else jax.lax.dynamic_slice_in_dim(m, sample, 1, axis=0)

    return mask


def _chunked(q, k, v, mask_fn, query_chunk):
    length = q.shape[2]
    if query_chunk is None or query_chunk >= length:
        return _attend(q, k, v, None if mask_fn is None else mask_fn(0, length))
    pad = -length % query_chunk
    q = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0)))

    def chunk(i, out):
        start = i * query_chunk
        qc = jax.lax.dynamic_slice_in_dim(q, start, query_chunk, axis=2)
        mask = None if mask_fn is None else mask_fn(start, query_chunk)
        return jax.lax.dynamic_update_slice_in_dim(out, _attend(qc, k, v, mask), start, axis=2)

    out = jax.lax.fori_loop(0, q.shape[2] // query_chunk, chunk, jnp.zeros(q.shape, q.dtype))
    return out[:, :, :length]


@functools.partial(jax.named_call, name="attend")
def _attend(q, k, v, mask):
    """Softmax attention of head-major ``q [B, H, Lq, D]`` over ``k, v [B, H, Lk, D]``; fp32 logits, scaled by
    1/sqrt(D) in fp32 (as flash attention does, no extra rounding of q in bf16) inside the exponent,
    ``exp((s - max s) / sqrt(D))``, which equals softmax of the scaled logits and lets XLA's CPU backend run
    the logits product without an epilogue; the normalisation applied after the value product. ``mask``
    (broadcastable to the logits) keeps True keys."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, _MASKED)
    logits_max = jnp.max(logits, axis=-1, keepdims=True)
    probs = jnp.exp((logits - logits_max) * scale)
    denom = jnp.sum(probs, axis=-1, keepdims=True)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / denom).astype(q.dtype)
