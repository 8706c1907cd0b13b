"""HunyuanVideo-Avatar's face-aware audio adapter (reference A.2).

The audio path of HunyuanCustom (``conditioning.audio``: ``audio_proj`` = AudioProjNet2, frame 0 prepended 3
more times so each latent frame gets 16 tokens, one-head cross-attention per latent frame), with two changes:
the adapters (``audio_adapter_blocks.{j}``) follow double blocks 1, 3, ..., 19, and their output is multiplied
by a face mask on the token grid before it is added to the video tokens (``video += adapter(audio, video) *
mask``; reference tokens get nothing).

Face masks (``cond.face_mask [B, 1 or T, h', w']``, any size) reach the token grid ``(T, H', W')`` by nearest
resizing as ``torch.nn.functional.interpolate(mode="nearest")`` does it (a single mask frame is repeated first).
Several characters (``cond.audio_feats [B, K, F, ...]`` with ``face_mask [B, K, 1 or T, h', w']``, the paper's
multi-character rule; the release wires one): each character's audio drives the same adapter and its output is
masked by that character's face, and the K results are summed. One character is exactly the released model.
"""

from __future__ import annotations

import dataclasses

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning.audio import align_to_latents, audio_layers, init_audio_layers, video_frames
from hcjax.models.extensions import DiTContext, Extension


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index of torch's ``interpolate(mode="nearest")``: ``min(floor(i * in / out),
    in - 1)`` with the scale in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def mask_to_tokens(mask: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
    """``[..., 1 or T_m, h', w']`` -> ``[..., T' H' W']`` (nearest, a single frame repeated over time)."""
    t, h, w = grid
    if mask.shape[-3] == 1:
        mask = jnp.repeat(mask, t, axis=-3)
    for axis, size in zip((-3, -2, -1), grid):
        mask = jnp.take(mask, nearest_indices(mask.shape[axis], size), axis=axis)
    return mask.reshape(*mask.shape[:-3], t * h * w)


def _by_character(cond, grid, frames: int, want: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``(audio [B, K, F, ...], mask [B, K, T'H'W'])`` from the cond's one- or K-character layout."""
    feats, mask = cond.audio_feats, cond.face_mask
    several = feats.ndim == 6
    if feats.ndim not in (5, 6) or tuple(feats.shape[-3:]) != want or feats.shape[-4] != frames:
        raise ValueError(f"audio_feats must be [B, {frames}, {', '.join(map(str, want))}] (Whisper windows of the "
                         f"{frames} video frames), or [B, K, {frames}, ...] for K characters, got "
                         f"{tuple(feats.shape)}")
    if not several:
        feats = feats[:, None]
    b, k = feats.shape[:2]
    if mask is None:
        return feats, jnp.ones((b, k, int(np.prod(grid))), jnp.float32)
    mask = jnp.asarray(mask)
    if mask.ndim != (5 if several else 4) or mask.shape[:2 if several else 1] != feats.shape[:2 if several else 1]:
        layout = f"[B, {k}, 1 or T, h, w]" if several else "[B, 1 or T, h, w]"
        raise ValueError(f"face_mask must be {layout} for audio_feats {tuple(cond.audio_feats.shape)}, got "
                         f"{tuple(mask.shape)}")
    if not several:
        mask = mask[:, None]
    return feats, mask_to_tokens(mask.astype(jnp.float32), grid)


class _FaceAudioModule(nn.Module):
    mech: "AvatarAudio"
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        m, cfg = self.mech, self.cfg
        proj, blocks = audio_layers(m, cfg, "audio_adapter_blocks")
        if cond is None or cond.audio_feats is None:
            if self.is_initializing():
                init_audio_layers(proj, blocks, m, cfg.hidden_size)
            return Extension()
        t, h, w = ctx.grid
        feats, mask = _by_character(cond, ctx.grid, video_frames(t), (m.window, m.layers, m.channels))
        b, k = feats.shape[:2]
        audio = align_to_latents(proj(einops.rearrange(feats, "b k f w l c -> (b k) f w l c")))
        num_video = t * h * w
        mask = einops.rearrange(mask, "b k l -> (b k) l 1")

        def hook(block):
            def run(carry):
                img, txt = carry
                video = einops.rearrange(img[:, -num_video:], "b (t l) d -> b t l d", t=t)
                video = jnp.repeat(video, k, axis=0)    # each character's audio attends from the same tokens
                out = einops.rearrange(block(audio, video), "bk t l d -> bk (t l) d")
                out = (out * mask.astype(out.dtype)).reshape(b, k, num_video, -1).sum(axis=1)
                return jnp.concatenate([img[:, :-num_video], img[:, -num_video:] + out.astype(img.dtype)], 1), txt
            return run

        return Extension(double_hooks=tuple((i, hook(blk)) for i, blk in zip(m.double_blocks, blocks)))


@dataclasses.dataclass(frozen=True)
class AvatarAudio:
    """Avatar's face-aware audio adapter (config entry of ``DiTConfig.mechanisms``); reads ``cond.audio_feats``
    and ``cond.face_mask``. Defaults: the official model (Whisper-tiny windows of 10 x 5 x 384, adapters after
    double blocks 1, 3, ..., 19)."""

    name: str = "audio"
    double_blocks: tuple[int, ...] = tuple(range(1, 20, 2))
    window: int = 10
    layers: int = 5
    channels: int = 384
    hidden: int = 1024
    head_dim: int = 1024
    tokens_per_frame: int = 4

    def build(self, dit_cfg, name: str) -> nn.Module:
        if self.hidden % self.head_dim:
            raise ValueError(f"audio hidden {self.hidden} is not a multiple of head_dim {self.head_dim}")
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"the audio adapter needs patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _FaceAudioModule(self, dit_cfg, name=name)
