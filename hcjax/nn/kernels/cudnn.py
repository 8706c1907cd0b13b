"""cuDNN flash attention (``jax.nn.dot_product_attention(implementation="cudnn")``) with hcjax's segment ids.

cuDNN takes padding as sequence lengths, not segment ids. Two cases:

* Short sequences (``L <= DENSE_MASK_MAX``, e.g. the token refiner with HunyuanCustom's non-contiguous masks):
  any segment ids, as a dense ``[B, 1, L, L]`` boolean mask.
* Long sequences: the DiT's pattern, one leading segment (image + valid text, ``n`` tokens) followed by one
  padding segment. Rows ``< n`` come from a call with ``key_value_seq_lengths = n``; the padding rows attend
  among themselves, which is the same problem on the *reversed* sequence with lengths ``L - n``: a second
  call whose work cuDNN bounds by those lengths (a few hundred text tokens), so it costs almost nothing.
  Other patterns at this length (e.g. padded image tokens in the middle, from sequence parallelism over a degree
  that does not divide the image) are detected at run time and computed by the XLA attention instead: correct,
  but slower; ``impl="pallas_gpu"`` handles any pattern at kernel speed.

cuDNN's fused attention needs fp16 / bf16 inputs; ``implementation`` is a parameter so that tests can run the
same logic through XLA on a CPU.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp


DENSE_MASK_MAX = 4096


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                    implementation: str | None = "cudnn") -> jax.Array:
    """Head-major ``q, k, v [B, H, L, D]`` -> ``[B, H, L, D]``; see the module docstring for ``segment_ids``."""
    q, k, v = (einops.rearrange(x, "b h l d -> b l h d") for x in (q, k, v))
    attend = lambda *args, **kw: jax.nn.dot_product_attention(*args, implementation=implementation, **kw)  # noqa
    length = q.shape[1]
    if segment_ids is None:
        out = attend(q, k, v)
    elif length <= DENSE_MASK_MAX:
        out = attend(q, k, v, mask=(segment_ids[:, None, :, None] == segment_ids[:, None, None, :]))
    else:
        out = _prefix_and_padding(attend, q, k, v, segment_ids)
    return einops.rearrange(out, "b l h d -> b h l d")


def _prefix_and_padding(attend, q, k, v, segment_ids):
    """Two length-bounded calls: the leading segment's rows, then the padding rows on the reversed sequence;
    the XLA attention where the segments are not one leading run followed by one other run."""
    length = q.shape[1]
    lead = segment_ids == segment_ids[:, :1]
    n = jnp.sum(lead, axis=1).astype(jnp.int32)
    prefix_form = jnp.all(lead == (jnp.arange(length)[None] < n[:, None])) & jnp.all(
        lead | (segment_ids == segment_ids[:, -1:]))

    def fallback():
        heads = lambda x: einops.rearrange(x, "b l h d -> b h l d")  # noqa: E731
        from hcjax.nn.attention import attention_head_major

        out = attention_head_major(heads(q), heads(k), heads(v), segment_ids, impl="xla")   # memory-bounded chunks
        return einops.rearrange(out, "b h l d -> b l h d")

    return jax.lax.cond(prefix_form, lambda: _two_calls(attend, q, k, v, n), fallback)


def _two_calls(attend, q, k, v, n):
    length = q.shape[1]
    leading = attend(q, k, v, key_value_seq_lengths=n)
    flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    tail = jnp.maximum(length - n, 1)
    padding = flip(attend(flip(q), flip(k), flip(v), query_seq_lengths=tail, key_value_seq_lengths=tail))
    rows = jnp.arange(length)[None, :, None, None] < n[:, None, None, None]
    return jnp.where(rows, leading, padding)
