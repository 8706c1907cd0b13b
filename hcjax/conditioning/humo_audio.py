"""HuMo's audio path (reference B.3): Whisper windows -> 16 audio tokens per latent frame -> a multi-head
cross-attention within each latent frame, after every double block.

``audio_proj`` (``AudioProjModel``): each latent frame's window ``[8, 5, 1280]`` (flattened to 51200) ->
``ReLU(glob_1) -> ReLU(glob_2) -> glob_3 -> [16, 1536] -> LayerNorm (eps 1e-5)``.

``audio_cross_attn_wrapper_{i}`` after double block ``i`` (HuMo's ``AudioCrossAttentionWrapper``, there inside
every Wan block between the text cross-attention and the FFN): ``x += o(attn(q, k, v))`` without a gate, where
``q = norm_q(q(norm1_audio(x)))``, ``k = norm_k(k(audio))``, ``v = v(audio)``; ``norm1_audio`` a LayerNorm with
affine params (eps 1e-6, fp32, cast back), ``norm_q`` / ``norm_k`` RMSNorms over the full width (eps 1e-6),
``D / head_dim`` heads, softmax scale ``head_dim^-1/2`` in fp32, no RoPE, no mask. The tokens of latent frame
``j`` attend only to frame ``j``'s 16 audio tokens. Reference frames (``conditioning.humo``, the ``n_ref``
frames just before the video tokens) are frames too: they attend to their own windows, zeros unless given.

Params mirror HuMo's key names (``audio_proj.audio_proj_glob_1.layer.*``, ``...audio_cross_attn.{q,k,v,o}``,
``norm_q``, ``norm_k``, ``norm1_audio``), so HuMo's ``audio_proj`` (whose width does not depend on the DiT)
converts as is; the block index follows ``audio_cross_attn_wrapper`` instead of ``blocks.{i}``. The output
projection ``o`` starts at zero (no released weights fit this backbone), so a fresh module changes nothing and the
backbone it is added to (``model.init_from``; the mechanism is ``addable``) starts where it was.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning.audio import AUDIO_LN_EPS
from hcjax.conditioning.humo import num_references
from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.linear import Dense
from hcjax.nn.norms import LayerNorm, RMSNorm

WAN_EPS = 1e-6


class _Wrapped(nn.Module):
    """HuMo's pass-through wrapper: the layer lives under ``layer`` (``audio_proj_glob_1.layer.weight``)."""

    make: object

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.make(name="layer")(x)


class HumoAudioProjection(nn.Module):
    """``AudioProjModel``: ``[B, F, window, groups, channels] -> [B, F, tokens, features]`` (fp32 out)."""

    hidden: int = 512
    tokens: int = 16
    features: int = 1536
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def dense(features, axes):
            return lambda name: Dense(features, axes, name=name, **kw)

        x = einops.rearrange(feats, "b f w l c -> b f (w l c)")
        x = jax.nn.relu(_Wrapped(dense(self.hidden, ("audio_in", "audio_hidden")), name="audio_proj_glob_1")(x))
        x = jax.nn.relu(_Wrapped(dense(self.hidden, ("audio_hidden", "audio_hidden")), name="audio_proj_glob_2")(x))
        x = _Wrapped(dense(self.tokens * self.features, ("audio_hidden", "audio_tokens")), name="audio_proj_glob_3")(x)
        x = einops.rearrange(x, "b f (n d) -> b f n d", n=self.tokens)
        norm = lambda name: LayerNorm(AUDIO_LN_EPS, affine=True, param_dtype=self.param_dtype,   # noqa: E731
                                      axis_name="audio_embed", name=name)
        return _Wrapped(norm, name="audio_proj_glob_norm")(x)


class FrameAudioAttention(nn.Module):
    """HuMo's ``WanT2VCrossAttentionGather``: per latent frame, video tokens ``[B, F, L, D]`` attend to audio
    tokens ``[B, F, A, Da]`` with ``D / head_dim`` heads; returns ``[B, F, L, D]`` in the compute dtype."""

    head_dim: int = 128
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, audio: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = video.shape[-1]
        norm = dict(eps=WAN_EPS, param_dtype=self.param_dtype, axis_name="attn")
        q = RMSNorm(name="norm_q", **norm)(Dense(d, ("embed", "attn"), name="q", **kw)(video))
        k = RMSNorm(name="norm_k", **norm)(Dense(d, ("audio_embed", "attn"), name="k", **kw)(audio))
        v = Dense(d, ("audio_embed", "attn"), name="v", **kw)(audio)
        heads = d // self.head_dim
        q, k, v = (einops.rearrange(x, "b f l (h e) -> b f h l e", h=heads) for x in (q, k, v))
        logits = jnp.einsum("bfhle,bfhae->bfhla", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits * np.float32(self.head_dim ** -0.5), axis=-1).astype(self.dtype)
        out = einops.rearrange(jnp.einsum("bfhla,bfhae->bfhle", weights, v), "b f h l e -> b f l (h e)")
        return Dense(d, ("attn", "embed"), name="o", kernel_init=nn.initializers.zeros, **kw)(out)


class AudioCrossAttentionWrapper(nn.Module):
    """``norm1_audio`` then ``audio_cross_attn``; returns the residual update ``[B, F, L, D]``."""

    head_dim: int = 128
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, audio: jax.Array) -> jax.Array:
        normed = LayerNorm(WAN_EPS, affine=True, param_dtype=self.param_dtype, name="norm1_audio")(video)
        return FrameAudioAttention(self.head_dim, self.dtype, self.param_dtype, name="audio_cross_attn")(
            normed.astype(video.dtype), audio)


def frame_windows(feats: jax.Array, num_video: int, num_ref: int, want: tuple[int, ...]) -> jax.Array:
    """``[B, num_ref + num_video, ...]`` windows in token order (reference frames first), from ``[B, T, ...]``
    (zero windows added for the references) or ``[B, T + n_ref, ...]`` (HuMo's order, references last)."""
    frames = feats.shape[1] if feats.ndim == 5 else None
    if feats.ndim != 5 or tuple(feats.shape[2:]) != want or frames not in (num_video, num_video + num_ref):
        extra = f" or [B, {num_video + num_ref}, ...] with the references' windows appended" if num_ref else ""
        raise ValueError(f"audio_feats must be [B, {num_video}, {', '.join(map(str, want))}] (HuMo's windows of "
                         f"the {num_video} latent frames){extra}, got {tuple(feats.shape)}")
    ref = (feats[:, num_video:] if frames > num_video
           else jnp.zeros((feats.shape[0], num_ref, *want), feats.dtype))
    return jnp.concatenate([ref, feats[:, :num_video]], axis=1)


class _HumoAudioModule(nn.Module):
    mech: "HumoAudio"
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        m, cfg = self.mech, self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        proj = HumoAudioProjection(m.hidden, m.tokens, m.features, name="audio_proj", **kw)
        blocks = [AudioCrossAttentionWrapper(m.head_dim, name=f"audio_cross_attn_wrapper_{i}", **kw)
                  for i in m.double_blocks]
        feats = None if cond is None else cond.audio_feats
        if feats is None:
            if self.is_initializing():
                tokens = proj(jnp.zeros((1, 1, m.window, m.groups, m.channels), jnp.float32))
                for block in blocks:
                    block(jnp.zeros((1, 1, 1, cfg.hidden_size), jnp.float32), tokens)
            return Extension()
        t, h, w = ctx.grid
        n_ref = num_references(cond)
        audio = proj(frame_windows(feats, t, n_ref, (m.window, m.groups, m.channels)))
        frames = n_ref + t

        def hook(block):
            def run(carry):
                img, txt = carry
                x = einops.rearrange(img[:, -frames * h * w:], "b (f l) d -> b f l d", f=frames)
                out = einops.rearrange(block(x, audio), "b f l d -> b (f l) d").astype(img.dtype)
                return jnp.concatenate([img[:, :-frames * h * w], img[:, -frames * h * w:] + out], axis=1), txt
            return run

        return Extension(double_hooks=tuple((i, hook(b)) for i, b in zip(m.double_blocks, blocks)))


@dataclasses.dataclass(frozen=True)
class HumoAudio:
    """HuMo's audio cross-attention (config entry of ``DiTConfig.mechanisms``); reads ``cond.audio_feats`` and
    counts ``cond.ref_latents``. Defaults: HuMo's numbers (whisper-large-v3 windows of 8 x 5 x 1280, 16 tokens of
    1536 per latent frame, heads of 128) after every one of the 20 double blocks."""

    name: str = "audio"
    addable: ClassVar[bool] = True    # params may be missing from ``model.init_from`` (freshly initialised)
    double_blocks: tuple[int, ...] = tuple(range(20))
    window: int = 8
    groups: int = 5
    channels: int = 1280
    hidden: int = 512
    tokens: int = 16
    features: int = 1536
    head_dim: int = 128

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.hidden_size % self.head_dim:
            raise ValueError(f"hidden_size {dit_cfg.hidden_size} is not a multiple of the audio head_dim "
                             f"{self.head_dim}")
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"HuMo's audio attention needs patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _HumoAudioModule(self, dit_cfg, name=name)
