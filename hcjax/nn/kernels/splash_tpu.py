"""Pallas splash attention (TPU) behind hcjax's attention entry point.

``splash_attention(q, k, v, segment_ids)`` on head-major ``[B, H, L, D]``: the sequence is padded to a multiple
of the block sizes (padded tokens form a segment of their own, so nothing real attends to them), q is scaled
by 1/sqrt(D) in fp32 before the kernel (splash applies no scale), the kernel runs per sample (``vmap``) with a
full mask and the segment ids, and the padding is cut off. Forward and backward are the kernel's own.

Under a mesh the kernel runs per device (``kernels.sharded.per_device``: Mosaic calls cannot be partitioned).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

from hcjax.nn.kernels.sharded import per_device

PAD_SEGMENT = np.iinfo(np.int32).max        # the segment of the padding tokens; real ids are smaller


@dataclasses.dataclass(frozen=True)
class SplashBlocks:
    """Tile sizes of the forward (``q``, ``kv``, ``kv_compute``) and the fused backward (``q_dkv``, ``kv_dkv``)
    kernels. The defaults suit video lengths (tens of thousands of tokens, head dim 128) on v5p / v6e;
    shorter sequences shrink every block to the padded length."""

    q: int = 512
    kv: int = 1024
    kv_compute: int = 512
    q_dkv: int = 512
    kv_dkv: int = 1024

    def fitted(self, length: int) -> "SplashBlocks":
        """Blocks for a sequence of ``length``: unchanged when it is at least as long as every block; otherwise
        one block of ``length`` rounded up to 128 (the TPU lane width), so that every block size divides the
        next (e.g. 831 text tokens -> 896; a kv block of 896 with the default kv_compute of 512 is invalid)."""
        cap = -(-length // 128) * 128
        if cap >= max(self.q, self.kv, self.kv_compute, self.q_dkv, self.kv_dkv):
            return self
        return SplashBlocks(cap, cap, cap, cap, cap)

    @property
    def multiple(self) -> int:
        """The sequence length must be a multiple of this."""
        return int(np.lcm.reduce([self.q, self.kv, self.kv_compute, self.q_dkv, self.kv_dkv]))

    def kernel_sizes(self) -> splash.BlockSizes:
        return splash.BlockSizes(block_q=self.q, block_kv=self.kv, block_kv_compute=self.kv_compute,
                                 block_q_dkv=self.q_dkv, block_kv_dkv=self.kv_dkv,
                                 block_kv_dkv_compute=self.kv_dkv, use_fused_bwd_kernel=True)


def _kernel(heads: int, length: int, blocks: SplashBlocks, interpret: bool):
    """A splash kernel for a full mask, built per trace: its block tables become constants of the trace (they
    belong to the trace's mesh context, so no kernel is cached across traces; building one is host work of
    milliseconds)."""
    mask = splash_mask.MultiHeadMask([splash_mask.FullMask((length, length))] * heads)
    return splash.make_splash_mha(mask, block_sizes=blocks.kernel_sizes(), head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _local_splash(q, k, v, segment_ids, blocks: SplashBlocks, interpret: bool):
    """The kernel on the arrays one device holds: ``[b, h, L, D]`` with ``L`` a multiple of the blocks."""
    kernel = _kernel(q.shape[1], q.shape[2], blocks, interpret)
    scaled = (q.astype(jnp.float32) * q.shape[-1] ** -0.5).astype(q.dtype)

    def one(qs, ks, vs, seg):
        return kernel(qs, ks, vs, segment_ids=splash.SegmentIds(q=seg, kv=seg))

    return jax.vmap(one)(scaled, k, v, segment_ids)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                     blocks: SplashBlocks = SplashBlocks(), interpret: bool = False) -> jax.Array:
    """Splash attention on head-major ``q, k, v [B, H, L, D]`` with optional ``segment_ids [B, L]`` ->
    ``[B, H, L, D]`` in q's dtype. ``interpret=True`` runs the kernel in the Pallas interpreter (any
    backend; for tests)."""
    b, h, length, _ = q.shape
    if k.shape[2] != length:
        raise ValueError(f"splash attention here is self-attention; got Lq {length} and Lk {k.shape[2]}")
    blocks = blocks.fitted(length)
    pad = -length % blocks.multiple
    if segment_ids is None:
        segment_ids = jnp.zeros((b, length), jnp.int32)
    segment_ids = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, pad)), constant_values=PAD_SEGMENT)
    q, k, v = (jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (q, k, v))
    run = functools.partial(_local_splash, blocks=blocks, interpret=interpret)
    return per_device(run, q, k, v, segment_ids)[:, :, :length]

