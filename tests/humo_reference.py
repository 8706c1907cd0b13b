"""A PyTorch statement of HuMo's conditioning on the HunyuanVideo blocks (reference B.2, B.3, B.8), for parity
tests.

The backbone blocks are a tiny random-init diffusers ``HunyuanVideoTransformer3DModel`` (equal to the official
blocks, ``test_dit_parity``). Around them this re-states HuMo-1.7B's layout literally: the clean reference latents
are concatenated *after* the video latents along time, the whole ``T + n_ref`` frame latent goes through the
patch embedding, RoPE is the plain grid of ``T + n_ref`` frames, the audio windows of the reference slots are
zeros, ``AudioProjModel`` + ``AudioCrossAttentionWrapper`` (Wan RMS / Layer norms, per-frame multi-head
cross-attention) follow the listed double blocks, and the reference frames are dropped after the final layer.
Written from the spec, in torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hcjax.configs import DiTConfig
from tests.custom_reference import final_video, official_blocks, rope_tables
from tests.torch_reference import diffusers_to_official, tiny_diffusers_dit


class Wrapper(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


class AudioProjModel(nn.Module):
    def __init__(self, window: int, groups: int, channels: int, hidden: int, dim: int, tokens: int):
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.audio_proj_glob_1 = Wrapper(nn.Linear(window * groups * channels, hidden))
        self.audio_proj_glob_2 = Wrapper(nn.Linear(hidden, hidden))
        self.audio_proj_glob_3 = Wrapper(nn.Linear(hidden, tokens * dim))
        self.audio_proj_glob_norm = Wrapper(nn.LayerNorm(dim))

    def forward(self, feats):                       # [B, F, window, groups, channels] -> [B, F, tokens, dim]
        b, f = feats.shape[:2]
        x = torch.relu(self.audio_proj_glob_1(feats.reshape(b * f, -1)))
        x = self.audio_proj_glob_3(torch.relu(self.audio_proj_glob_2(x)))
        return self.audio_proj_glob_norm(x.reshape(b * f, self.tokens, self.dim)).reshape(b, f, self.tokens, -1)


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FrameCrossAttention(nn.Module):
    """``WanT2VCrossAttentionGather``: queries regrouped per latent frame, 16 audio tokens per frame."""

    def __init__(self, kv_dim: int, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim), nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim),
                                          nn.Linear(dim, dim))
        self.norm_q, self.norm_k = WanRMSNorm(dim), WanRMSNorm(dim)

    def forward(self, x, audio, hw: int):           # x [B, F*hw, D], audio [B, F*16, Da]
        b, n = x.shape[0], self.heads
        q = self.norm_q(self.q(x)).view(b, -1, n, x.shape[-1] // n)
        k = self.norm_k(self.k(audio)).view(b, -1, n, q.shape[-1])
        v = self.v(audio).view(b, -1, n, q.shape[-1])
        e = q.shape[-1]
        q, k, v = q.reshape(-1, hw, n, e), k.reshape(-1, 16, n, e), v.reshape(-1, 16, n, e)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return self.o(out.reshape(b, -1, n, q.shape[-1]).flatten(2))


class AudioCrossAttentionWrapper(nn.Module):
    def __init__(self, dim: int, kv_dim: int, heads: int):
        super().__init__()
        self.audio_cross_attn = FrameCrossAttention(kv_dim, dim, heads)
        self.norm1_audio = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=True)

    def forward(self, x, audio, hw: int):
        return x + self.audio_cross_attn(self.norm1_audio(x.float()).type_as(x), audio, hw)


class TorchHumoDiT(nn.Module):
    """The HunyuanVideo DiT at the size of ``cfg`` (no guidance embedding) with HuMo's appended references and
    audio cross-attention ``audio`` (a ``HumoAudio``). Every weight is random, the norms' too."""

    def __init__(self, cfg: DiTConfig, audio, seed: int = 0):
        super().__init__()
        self.cfg, self.audio_cfg = cfg, audio
        self.dit = tiny_diffusers_dit(cfg, seed=seed)
        torch.manual_seed(seed + 1)
        d = cfg.hidden_size
        self.audio_proj = AudioProjModel(audio.window, audio.groups, audio.channels, audio.hidden, audio.features,
                                         audio.tokens)
        self.audio_cross_attn_wrapper = nn.ModuleList([AudioCrossAttentionWrapper(d, audio.features,
                                                                                  d // audio.head_dim)
                                                       for _ in audio.double_blocks])
        for name, p in self.named_parameters():
            if not name.startswith("dit.") and p.ndim == 1:
                nn.init.normal_(p, mean=1.0 if "weight" in name else 0.0, std=0.2)
        self.eval()
        self.cache = None

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        sd = diffusers_to_official(self.dit.state_dict())
        sd.update({k: v for k, v in self.state_dict().items() if not k.startswith("dit.")})
        return sd

    @torch.no_grad()
    def forward(self, x, t, txt, mask, pooled, ref, audio):
        """``x [B, C, T, H, W]``, ``ref [B, C, n_ref, H, W]``, ``audio [B, T, 8, 5, c]`` (video frames' windows);
        returns the velocity ``[B, C, T, H, W]``."""
        dit, cfg = self.dit, self.cfg
        b, _, tv, h, w = x.shape
        n_ref = ref.shape[2]
        pt, ph, pw = cfg.patch_size
        frames, th, tw = (tv + n_ref) // pt, h // ph, w // pw
        temb, _ = dit.time_text_embed(t, pooled, None)
        img = dit.x_embedder(torch.cat([x, ref], dim=2))             # references last in time
        txt = dit.context_embedder(txt, t, mask)
        windows = torch.cat([audio, torch.zeros(b, n_ref, *audio.shape[2:])], dim=1)
        tokens = self.audio_proj(windows).flatten(1, 2)               # [B, frames * 16, Da]
        length = img.shape[1] + txt.shape[1]
        valid = img.shape[1] + mask.sum(dim=1)
        attn_mask = (torch.arange(length)[None] < valid[:, None])[:, None, None]
        grid = np.stack(np.meshgrid(np.arange(frames), np.arange(th), np.arange(tw), indexing="ij")).reshape(3, -1)
        rope = rope_tables(grid, cfg)

        def after_double(i, img):
            if i not in self.audio_cfg.double_blocks:
                return img
            return self.audio_cross_attn_wrapper[self.audio_cfg.double_blocks.index(i)](img, tokens, th * tw)

        img = official_blocks(self, img, txt, temb, attn_mask, rope, after_double, False)
        return final_video(dit, img, temb, cfg.patch_size, (frames, th, tw))[:, :, :tv]
