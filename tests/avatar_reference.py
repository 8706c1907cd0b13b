"""A PyTorch statement of HunyuanVideo-Avatar's DiT forward (reference A.1, A.2, A.8), for parity tests.

The backbone blocks are a tiny random-init diffusers ``HunyuanVideoTransformer3DModel`` (equal to the official
blocks, ``test_dit_parity``); around them this re-states the official ``models_audio.py`` forward: ``vec = time
+ motion_exp + motion_pose + fps + pooled``, ``img = img_in(x) + before_proj(ref_in(ref))``, ``img_in(ref[:, :,
:1])`` prepended with the ``timecat`` RoPE grid (t = -1, no spatial shift), the face mask repeated over time and
nearest-resized to the token grid, ``audio_proj`` + ``PerceiverAttentionCA`` after the listed double blocks times
the mask, the cache of the last single block's input, reference tokens dropped before the final layer. Written
from the spec, in torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hcjax.configs import DiTConfig
from tests.custom_reference import (AudioProjNet2, PerceiverAttentionCA, audio_attention, final_video,
                                    official_blocks, rope_tables)
from tests.torch_reference import diffusers_to_official, tiny_diffusers_dit


def official_rope_grid(t: int, h: int, w: int) -> np.ndarray:
    """``[3, L]``: the ``timecat`` grid, one slice at time -1 (the first frame's h, w) before the video grid."""
    grid = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"))   # [3, T, H, W]
    bias = grid[:, :1].copy()
    bias[0] = -1
    return np.concatenate([bias, grid], axis=1).reshape(3, -1)


class TimestepEmbedder(nn.Module):
    """The official TimestepEmbedder: ``[cos | sin]`` sinusoid of 256 (max period 1e4) -> Linear -> SiLU ->
    Linear."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class TorchAvatarDiT(nn.Module):
    """HunyuanVideo-Avatar's DiT at the size of ``cfg`` with the audio adapter ``audio`` (an ``AvatarAudio``).
    Every weight is random (``to_out`` too, unlike the official zero init)."""

    def __init__(self, cfg: DiTConfig, audio, seed: int = 0):
        super().__init__()
        self.cfg, self.audio_cfg = cfg, audio
        self.dit = tiny_diffusers_dit(cfg, seed=seed)
        torch.manual_seed(seed + 1)
        d, pt, ph, pw = cfg.hidden_size, *cfg.patch_size
        self.ref_in = nn.Conv3d(cfg.in_channels, d, (pt, ph, pw), stride=(pt, ph, pw))
        self.before_proj = nn.Linear(d, d)
        self.audio_proj = AudioProjNet2(audio.window, audio.layers, audio.channels, audio.hidden, d,
                                        audio.tokens_per_frame)
        self.audio_adapter_blocks = nn.ModuleList([PerceiverAttentionCA(d, audio.hidden, audio.head_dim)
                                                   for _ in audio.double_blocks])
        for m in self.audio_adapter_blocks:
            nn.init.normal_(m.to_out.weight, std=0.05)
        self.motion_exp, self.motion_pose = TimestepEmbedder(d // 4), TimestepEmbedder(d // 4)
        self.fps_proj = TimestepEmbedder(d)
        self.eval()
        self.cache = None

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        sd = diffusers_to_official(self.dit.state_dict())
        for name, value in self.state_dict().items():
            if not name.startswith("dit."):
                sd[name.replace("ref_in.", "ref_in.proj.")] = value
        return sd

    @torch.no_grad()
    def forward(self, x, t, txt, mask, pooled, ref, audio, face_mask, motion_exp, motion_pose, fps,
                is_cache=False):
        """``x [B, C, T, H, W]``, ``ref [B, C, T, H, W]``, ``audio [B, F, 10, 5, c]``, ``face_mask [B, 1, 1 or T,
        h', w']``, ``motion_* [B, 4]``, ``fps [B]``; returns the velocity ``[B, C, T, H, W]``."""
        dit, cfg = self.dit, self.cfg
        b, _, ot, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        tt, th, tw = ot // pt, h // ph, w // pw
        temb, _ = dit.time_text_embed(t, pooled, None)     # time_in(t) + vector_in(pooled)
        vec = temb + self.motion_exp(motion_exp.reshape(-1)).reshape(b, -1)
        vec = vec + self.motion_pose(motion_pose.reshape(-1)).reshape(b, -1) + self.fps_proj(fps)
        feats = self.audio_proj(audio)
        img = dit.x_embedder(x)
        refs = self.ref_in(ref).flatten(2).transpose(1, 2)
        first = dit.x_embedder(ref[:, :, :1])
        txt = dit.context_embedder(txt, t, mask)
        img = self.before_proj(refs) + img
        ref_len = first.shape[1]
        img = torch.cat([first, img], dim=1)
        if face_mask.shape[2] == 1:
            face_mask = face_mask.repeat(1, 1, ot, 1, 1)
        face_mask = F.interpolate(face_mask, size=[ot, th, tw], mode="nearest").reshape(b, -1, 1)
        length = img.shape[1] + txt.shape[1]
        valid = img.shape[1] + mask.sum(dim=1)
        attn_mask = (torch.arange(length)[None] < valid[:, None])[:, None, None]
        rope = rope_tables(official_rope_grid(tt, th, tw), cfg)

        def after_double(i, img):
            if i not in self.audio_cfg.double_blocks:
                return img
            block = self.audio_adapter_blocks[self.audio_cfg.double_blocks.index(i)]
            out = audio_attention(block, feats, img, ref_len, tt)
            return img + torch.cat([torch.zeros_like(img[:, :ref_len]), out * face_mask], dim=1)

        img = official_blocks(self, img, txt, vec, attn_mask, rope, after_double, is_cache)
        return final_video(dit, img[:, ref_len:], vec, cfg.patch_size, (tt, th, tw))
