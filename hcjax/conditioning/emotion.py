"""HunyuanVideo-Avatar's Audio Emotion Module (AEM), reading ``cond.emotion_latents [B, h, w, C]``.

**Paper** (section 2.2.4, Eq. 6): an emotion reference image ``I_ref`` is encoded, ``E_ref = Encoder(I_ref)``,
passed through an FC layer, and injected into the video latents of the **double-stream** blocks only by a
spatial cross-attention per latent frame, scaled by a learnable ``gamma_E``::

    y[b, f] = y[b, f] + gamma_E * CrossAttn(FC(E_ref), y[b, f])     # queries: frame f's tokens; keys/values: FC(E_ref)

**Ours** (no code or weights were released, reference A.3; every detail below is our choice):

* Encoder: the DiT's shared patch embedding ``img_in`` (``ctx.patch_embed``), as the character image uses, on one
  latent frame of the emotion image (VAE-encoded and scaled like the reference). FC: ``fc``, Linear ``D -> D``.
* After each double block of ``double_blocks`` (by default those of the face-audio adapter, 1, 3, ..., 19; the
  hooks run after that block's audio hooks when this mechanism comes later in ``DiTConfig.mechanisms``):
  ``cross_attn_{j}`` = LayerNorm (affine, eps 1e-6) on both sides, ``to_q`` / ``to_kv`` / ``to_out`` Linears with
  bias (torch's default init; ``to_out`` is *not* zeroed), ``hidden / head_dim`` heads, softmax over the emotion
  tokens with scale ``head_dim^-1/2``, no RoPE, times its own scalar ``gamma`` (init 0: a fresh module changes
  nothing, while ``gamma`` still gets a gradient, after which everything learns).
* Every latent frame attends to the same emotion tokens, so the per-frame attention of Eq. 6 equals one
  attention of all video tokens at once, which is how it is computed (memory-bounded by ``nn.attention``).
* Queries are the video tokens only; the prepended reference-frame tokens get nothing (as with the released
  audio adapter; Eq. 6a's ``n + 1`` frames could also be read as including them).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.attention import attention
from hcjax.nn.linear import Dense, partitioned
from hcjax.nn.norms import LayerNorm

EMOTION_LN_EPS = 1e-6
CROSS_IMPLS = ("xla", "cudnn")   # the attention implementations with queries and keys of different lengths


class EmotionCrossAttention(nn.Module):
    """``gamma * CrossAttn``: video tokens ``[B, L, D]`` attend to emotion tokens ``[B, E, D]``; returns the
    addition ``[B, L, D]`` in fp32."""

    hidden: int
    head_dim: int
    impl: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, emotion: jax.Array, video: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = video.shape[-1]
        q = Dense(self.hidden, ("embed", "attn"), name="to_q", **kw)(
            LayerNorm(EMOTION_LN_EPS, affine=True, param_dtype=self.param_dtype, name="norm_q")(video))
        kv = Dense(2 * self.hidden, ("embed", "kv"), name="to_kv", **kw)(
            LayerNorm(EMOTION_LN_EPS, affine=True, param_dtype=self.param_dtype, name="norm_kv")(emotion))
        heads = self.hidden // self.head_dim
        q, k, v = (einops.rearrange(x, "b l (h e) -> b l h e", h=heads) for x in (q, *jnp.split(kv, 2, axis=-1)))
        out = einops.rearrange(attention(q, k, v, impl=self.impl), "b l h e -> b l (h e)")
        out = Dense(d, ("attn", "embed"), name="to_out", **kw)(out)
        gamma = self.param("gamma", partitioned(nn.initializers.zeros, ()), (), self.param_dtype)
        return gamma.astype(jnp.float32) * out.astype(jnp.float32)


class _EmotionModule(nn.Module):
    mech: "AvatarEmotion"
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        m, cfg = self.mech, self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        impl = cfg.attention_impl if cfg.attention_impl in CROSS_IMPLS else "auto"
        fc = Dense(cfg.hidden_size, ("embed", "embed"), name="fc", **kw)
        blocks = [EmotionCrossAttention(m.hidden, m.head_dim, impl, name=f"cross_attn_{j}", **kw)
                  for j in range(len(m.double_blocks))]
        emotion = None if cond is None else getattr(cond, "emotion_latents", None)
        if emotion is None:
            if self.is_initializing():
                tokens = fc(jnp.zeros((1, 1, cfg.hidden_size), jnp.float32))
                for block in blocks:
                    block(tokens, tokens)
            return Extension()
        _check(emotion, cfg, ctx.vec.shape[0])
        tokens = fc(ctx.patch_embed(emotion[:, None]))     # FC(Encoder(E_ref)): [B, h' w', D]
        num_video = ctx.grid[0] * ctx.grid[1] * ctx.grid[2]

        def hook(block):
            def run(carry):
                img, txt = carry
                video = img[:, -num_video:]
                added = (video.astype(jnp.float32) + block(tokens, video)).astype(img.dtype)
                return jnp.concatenate([img[:, :-num_video], added], axis=1), txt
            return run

        return Extension(double_hooks=tuple((i, hook(b)) for i, b in zip(m.double_blocks, blocks)))


def _check(emotion: jax.Array, cfg, batch: int) -> None:
    _, ph, pw = cfg.patch_size
    b, h, w, c = emotion.shape if emotion.ndim == 4 else (None,) * 4
    if emotion.ndim != 4 or b != batch or c != cfg.in_channels or h % ph or w % pw:
        raise ValueError(f"emotion_latents must be [B={batch}, h, w, {cfg.in_channels}] (one latent frame of the "
                         f"emotion image, h and w multiples of {ph}, {pw}), got {tuple(emotion.shape)}")


@dataclasses.dataclass(frozen=True)
class AvatarEmotion:
    """The Audio Emotion Module (config entry of ``DiTConfig.mechanisms``); reads ``cond.emotion_latents``.
    No released checkpoint has it: a model directory without its params may seed a model with it
    (``addable``; ``hcjax.training.init_from``)."""

    name: str = "emotion"
    double_blocks: tuple[int, ...] = tuple(range(1, 20, 2))
    hidden: int = 1024
    head_dim: int = 128
    addable: ClassVar[bool] = True   # its params may be missing from ``model.init_from`` (freshly initialised)

    def build(self, dit_cfg, name: str) -> nn.Module:
        if self.hidden % self.head_dim:
            raise ValueError(f"emotion hidden {self.hidden} is not a multiple of head_dim {self.head_dim}")
        return _EmotionModule(self, dit_cfg, name=name)
