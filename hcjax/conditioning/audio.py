"""HunyuanCustom's AudioNet: Whisper windows -> audio tokens -> per-frame cross-attention after double blocks.

Reference section 6.2. ``audio_proj`` (``AudioProjNet2``) turns each video frame's window ``[10, 5, 384]``
(flattened to 19200) into 4 tokens: ``ReLU(proj1) -> ReLU(proj2) -> proj3 -> [4, D] -> LayerNorm (eps 1e-5)``.
Alignment to latent frames: frame 0's tokens are prepended 3 more times, so ``F + 3 = 4 T'`` frames of 4 tokens
regroup into ``T'`` latent frames of 16 tokens (latent ``j`` <- video frames ``4j - 3 .. 4j``; latent 0 <- frame
0 four times). After double block ``i`` of ``double_blocks`` (1, 3, 5, 7, 9, 11), ``audio_models_k``
(``PerceiverAttentionCA``, one head of width 1024) lets the video tokens of each latent frame attend to that
frame's 16 audio tokens: ``q = to_q(LN2(video))``, ``k | v = to_kv(LN1(audio))``, logits
``(q d^-1/4)(k d^-1/4)^T`` with softmax in fp32, ``to_out``; the result times ``audio_strength`` is added to the
video tokens. Reference tokens get nothing. Params mirror the official keys ``audio_proj.*`` and
``audio_models.{k}.*``; ``to_out`` starts at zero (the official init), so a fresh adapter changes nothing.
"""

from __future__ import annotations

import dataclasses

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.linear import Dense
from hcjax.nn.norms import LayerNorm

AUDIO_LN_EPS = 1e-5   # torch's LayerNorm default, as the official audio modules
FRAMES_PER_LATENT = 4


def video_frames(latent_frames: int) -> int:
    """Video frames ``F = 4 (T - 1) + 1`` of ``T`` latent frames (the causal VAE's time compression)."""
    return FRAMES_PER_LATENT * (latent_frames - 1) + 1


def latent_frame_sources(num_frames: int) -> np.ndarray:
    """``[T', 4]`` the video frame whose audio tokens fill each slot of each latent frame (the ``(f + 1) * 4``
    rule: frame 0 padded to 4 slots, then 4 frames per latent frame): ``[[0,0,0,0], [1,2,3,4], [5,6,7,8], ...]``."""
    if (num_frames - 1) % FRAMES_PER_LATENT:
        raise ValueError(f"{num_frames} video frames is not 4k+1")
    frames = np.concatenate([np.zeros(FRAMES_PER_LATENT - 1, np.int64), np.arange(num_frames)])
    return frames.reshape(-1, FRAMES_PER_LATENT)


def align_to_latents(tokens: jax.Array) -> jax.Array:
    """Per-video-frame tokens ``[B, F, n, D]`` -> per-latent-frame ``[B, T', 4 n, D]`` (``latent_frame_sources``)."""
    first = jnp.repeat(tokens[:, :1], FRAMES_PER_LATENT - 1, axis=1)
    padded = jnp.concatenate([first, tokens], axis=1)
    return einops.rearrange(padded, "b (t f) n d -> b t (f n) d", f=FRAMES_PER_LATENT)


class AudioProjection(nn.Module):
    """``AudioProjNet2``: ``[B, F, window, layers, channels] -> [B, F, tokens, D]``."""

    hidden: int
    tokens: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = einops.rearrange(feats, "b f w l c -> b f (w l c)")
        x = jax.nn.relu(Dense(self.hidden, ("audio_in", "audio_hidden"), name="proj1", **kw)(x))
        x = jax.nn.relu(Dense(self.hidden, ("audio_hidden", "audio_hidden"), name="proj2", **kw)(x))
        x = Dense(self.tokens * self.features, ("audio_hidden", "audio_tokens"), name="proj3", **kw)(x)
        x = einops.rearrange(x, "b f (n d) -> b f n d", n=self.tokens)
        return LayerNorm(AUDIO_LN_EPS, affine=True, param_dtype=self.param_dtype, name="norm")(x)


class AudioCrossAttention(nn.Module):
    """``PerceiverAttentionCA``: per latent frame, video tokens ``[B, T', L, D]`` attend to audio tokens
    ``[B, T', A, D]``; returns ``[B, T', L, D]`` in the compute dtype."""

    hidden: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array, video: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        d = video.shape[-1]
        audio = LayerNorm(AUDIO_LN_EPS, affine=True, param_dtype=self.param_dtype, name="norm1")(audio)
        video = LayerNorm(AUDIO_LN_EPS, affine=True, param_dtype=self.param_dtype, name="norm2")(video)
        q = Dense(self.hidden, ("embed", "audio_hidden"), name="to_q", **kw)(video)
        k, v = jnp.split(Dense(2 * self.hidden, ("embed", "audio_kv"), name="to_kv", **kw)(audio), 2, axis=-1)
        heads = self.hidden // self.head_dim
        q, k, v = (einops.rearrange(x, "b t l (h e) -> b t h l e", h=heads) for x in (q, k, v))
        scale = np.float32(1.0 / np.sqrt(np.sqrt(self.head_dim)))
        logits = jnp.einsum("bthle,bthae->bthla", (q * scale).astype(self.dtype), (k * scale).astype(self.dtype))
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = einops.rearrange(jnp.einsum("bthla,bthae->bthle", weights, v), "b t h l e -> b t l (h e)")
        return Dense(d, ("audio_hidden", "embed"), name="to_out", kernel_init=nn.initializers.zeros, **kw)(out)


def audio_layers(m, cfg, block_name: str) -> tuple[AudioProjection, list[AudioCrossAttention]]:
    """``audio_proj`` and one cross-attention per hooked double block (``{block_name}_{k}``), created in the calling
    module's scope; ``m`` is a CustomAudio / AvatarAudio config."""
    kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
    proj = AudioProjection(m.hidden, m.tokens_per_frame, cfg.hidden_size, name="audio_proj", **kw)
    return proj, [AudioCrossAttention(m.hidden, m.head_dim, name=f"{block_name}_{k}", **kw)
                  for k in range(len(m.double_blocks))]


def init_audio_layers(proj: AudioProjection, blocks: list[AudioCrossAttention], m, hidden_size: int) -> None:
    """Creates the layers' params from dummy inputs (``init`` without audio)."""
    tokens = proj(jnp.zeros((1, 1, m.window, m.layers, m.channels), jnp.float32))
    for block in blocks:
        block(tokens, jnp.zeros((1, 1, 1, hidden_size), jnp.float32))


class _AudioModule(nn.Module):
    mech: "CustomAudio"
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        m, cfg = self.mech, self.cfg
        proj, blocks = audio_layers(m, cfg, "audio_models")
        feats = None if cond is None else cond.audio_feats
        if feats is None:
            if self.is_initializing():
                init_audio_layers(proj, blocks, m, cfg.hidden_size)
            return Extension()
        t, h, w = ctx.grid
        want, frames = (m.window, m.layers, m.channels), video_frames(t)
        if feats.ndim != 5 or tuple(feats.shape[2:]) != want or feats.shape[1] != frames:
            raise ValueError(f"audio_feats must be [B, {frames}, {', '.join(map(str, want))}] (Whisper "
                             f"windows of the {frames} video frames of {t} latent frames), got "
                             f"{tuple(feats.shape)}")
        audio = align_to_latents(proj(feats))
        strength = jnp.asarray(cond.audio_strength, jnp.float32)   # fp32 product, as torch's bf16 * float
        num_video = t * h * w

        def hook(block):
            def run(carry):
                img, txt = carry
                video = einops.rearrange(img[:, -num_video:], "b (t l) d -> b t l d", t=t)
                out = einops.rearrange(block(audio, video), "b t l d -> b (t l) d")
                added = img[:, -num_video:] + (out.astype(jnp.float32) * strength).astype(img.dtype)
                return jnp.concatenate([img[:, :-num_video], added], axis=1), txt
            return run

        return Extension(double_hooks=tuple((i, hook(b)) for i, b in zip(m.double_blocks, blocks)))


@dataclasses.dataclass(frozen=True)
class CustomAudio:
    """HunyuanCustom's audio adapter (config entry of ``DiTConfig.mechanisms``); reads ``cond.audio_feats`` and
    ``cond.audio_strength``. Defaults: the official audio model (Whisper-tiny windows of 10 x 5 x 384)."""

    name: str = "audio"
    double_blocks: tuple[int, ...] = (1, 3, 5, 7, 9, 11)
    window: int = 10
    layers: int = 5
    channels: int = 384
    hidden: int = 1024           # audio_proj's width and the cross-attention's width
    head_dim: int = 1024         # one head
    tokens_per_frame: int = 4

    def build(self, dit_cfg, name: str) -> nn.Module:
        if self.hidden % self.head_dim:
            raise ValueError(f"audio hidden {self.hidden} is not a multiple of head_dim {self.head_dim}")
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"the audio adapter needs patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _AudioModule(self, dit_cfg, name=name)
