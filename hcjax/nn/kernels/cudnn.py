"""cuDNN flash attention (``jax.nn.dot_product_attention(implementation="cudnn")``) with hcjax's segment ids.

cuDNN takes padding as sequence lengths, not segment ids. Two cases:

* Short sequences (``L <= DENSE_MASK_MAX``, e.g. the token refiner with HunyuanCustom's non-contiguous masks):
  any segment ids, as a dense ``[B, 1, L, L]`` boolean mask.
* Long sequences: the DiT's pattern, one leading segment (image + valid text, ``n`` tokens) followed by one
  padding segment. Rows ``< n`` come from a call with ``key_value_seq_lengths = n``; the padding rows attend
  among themselves, which is the same problem on the *reversed* sequence with lengths ``L - n``: a second
  call whose work cuDNN bounds by those lengths (a few hundred text tokens), so it costs almost nothing.
  Other patterns at this length are not representable here: use ``impl="pallas_gpu"`` or ``"xla"``.

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
    """Two length-bounded calls: the leading segment's rows, then the padding rows on the reversed sequence."""
    length = q.shape[1]
    n = jnp.sum(segment_ids == segment_ids[:, :1], axis=1).astype(jnp.int32)
    leading = attend(q, k, v, key_value_seq_lengths=n)
    flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    tail = jnp.maximum(length - n, 1)
    padding = flip(attend(flip(q), flip(k), flip(v), query_seq_lengths=tail, key_value_seq_lengths=tail))
    rows = jnp.arange(length)[None, :, None, None] < n[:, None, None, None]
    return jnp.where(rows, leading, padding)
