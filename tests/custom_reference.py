"""A PyTorch statement of HunyuanCustom's DiT forward (reference section 6), for parity tests.

The backbone blocks are a tiny random-init diffusers ``HunyuanVideoTransformer3DModel`` (proven equal to the
official T2V blocks by ``test_dit_parity``); around them this re-states the official ``hymm_sp`` forward:
reference latents through ``img_in`` prepended to the video tokens, RoPE tables built like the official
``get_nd_rotary_pos_embed_new(..., concat_dict={"mode": "timecat-w", "bias": -1})``, ``bg_proj(bg_in(bg))``
added to the video tokens, ``AudioProjNet2`` + ``PerceiverAttentionCA`` after the listed double blocks, the step
cache (``is_cache``), and the reference tokens dropped before the final layer. Written from the spec, in torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hcjax.configs import DiTConfig
from tests.torch_reference import diffusers_to_official, tiny_diffusers_dit


class AudioProjNet2(nn.Module):
    def __init__(self, window: int, layers: int, channels: int, hidden: int, dim: int, tokens: int):
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.proj1 = nn.Linear(window * layers * channels, hidden)
        self.proj2 = nn.Linear(hidden, hidden)
        self.proj3 = nn.Linear(hidden, tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats):                       # [B, F, window, layers, channels]
        b, f = feats.shape[:2]
        x = feats.reshape(b * f, -1)
        x = torch.relu(self.proj2(torch.relu(self.proj1(x))))
        x = self.norm(self.proj3(x).reshape(b * f, self.tokens, self.dim))
        return x.reshape(b, f, self.tokens, self.dim)


class PerceiverAttentionCA(nn.Module):
    def __init__(self, dim: int, hidden: int, head_dim: int):
        super().__init__()
        self.head_dim, self.heads = head_dim, hidden // head_dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, hidden, bias=False)
        self.to_kv = nn.Linear(dim, 2 * hidden, bias=False)
        self.to_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, audio, video):                # [B, T, A, D], [B, T, L, D]
        b, t = video.shape[:2]
        audio, video = audio.flatten(0, 1), video.flatten(0, 1)
        q = self.to_q(self.norm2(video))
        k, v = self.to_kv(self.norm1(audio)).chunk(2, dim=-1)
        split = lambda x: x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)  # noqa
        q, k, v = split(q), split(k), split(v)
        scale = 1 / math.sqrt(math.sqrt(self.head_dim))
        weight = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), dim=-1)
        out = (weight @ v).permute(0, 2, 1, 3).flatten(2)
        return self.to_out(out).reshape(b, t, -1, video.shape[-1])


def official_rope_grid(t: int, h: int, w: int) -> np.ndarray:
    """``[3, L]`` positions as the official helper builds them with ``timecat-w``: the first frame's grid,
    time set to the bias -1 and width shifted by ``w``, concatenated before the video grid."""
    grid = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"))   # [3, T, H, W]
    bias = grid[:, :1].copy()
    bias[0] = -1
    bias[2] += w
    return np.concatenate([bias, grid], axis=1).reshape(3, -1)


def rope_tables(positions: np.ndarray, cfg: DiTConfig):
    """diffusers' ``get_1d_rotary_pos_embed`` per axis on the ``[3, L]`` positions, concatenated."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    parts = [get_1d_rotary_pos_embed(d, torch.tensor(positions[i], dtype=torch.float32), cfg.rope_theta,
                                     use_real=True) for i, d in enumerate(cfg.rope_axes)]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


class TorchCustomDiT(nn.Module):
    """HunyuanCustom's DiT at the size of ``cfg`` (no guidance embedding), with the editing and / or audio
    parts when ``editing`` / ``audio`` (a ``CustomAudio`` config) are given. Every weight is random (``to_out``
    too, unlike the official zero init) so that every path is exercised."""

    def __init__(self, cfg: DiTConfig, seed: int = 0, editing: bool = False, audio=None):
        super().__init__()
        self.cfg, self.audio_cfg = cfg, audio
        self.dit = tiny_diffusers_dit(cfg, seed=seed)
        torch.manual_seed(seed + 1)
        d, pt, ph, pw = cfg.hidden_size, *cfg.patch_size
        if editing:
            self.bg_in = nn.Conv3d(2 * cfg.in_channels, d, (pt, ph, pw), stride=(pt, ph, pw))
            self.bg_proj = nn.Linear(d, d)
        if audio is not None:
            self.audio_proj = AudioProjNet2(audio.window, audio.layers, audio.channels, audio.hidden, d,
                                            audio.tokens_per_frame)
            self.audio_models = nn.ModuleList([PerceiverAttentionCA(d, audio.hidden, audio.head_dim)
                                               for _ in audio.double_blocks])
            for m in self.audio_models:
                nn.init.normal_(m.to_out.weight, std=0.05)
        self.eval()
        self.cache = None

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        sd = diffusers_to_official(self.dit.state_dict())
        for name, value in self.state_dict().items():
            if not name.startswith("dit."):
                sd[name.replace("bg_in.", "bg_in.proj.")] = value
        return sd

    @torch.no_grad()
    def forward(self, x, t, txt, mask, pooled, ref, positions, bg=None, audio=None, strength=1.0, is_cache=False):
        """``x [B, C, T, H, W]``, ``ref [B, C, n, H, W]`` (n subjects, tokens in subject order), ``positions
        [3, L_ref + L_video]``; returns the velocity ``[B, C, T, H, W]``."""
        dit, cfg = self.dit, self.cfg
        b, _, t_lat, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        tt, th, tw = t_lat // pt, h // ph, w // pw
        temb, _ = dit.time_text_embed(t, pooled, None)
        img = dit.x_embedder(x)
        refs = torch.cat([dit.x_embedder(ref[:, :, k:k + 1]) for k in range(ref.shape[2])], dim=1)
        if bg is not None:
            img = self.bg_proj(self.bg_in(bg).flatten(2).transpose(1, 2)) + img
        txt = dit.context_embedder(txt, t, mask)
        ref_len = refs.shape[1]
        img = torch.cat([refs, img], dim=1)
        length = img.shape[1] + txt.shape[1]
        valid = img.shape[1] + mask.sum(dim=1)
        attn_mask = (torch.arange(length)[None] < valid[:, None])[:, None, None]
        rope = rope_tables(positions, cfg)
        feats = None if audio is None else self.audio_proj(audio)

        def after_double(i, img):
            if feats is None or i not in self.audio_cfg.double_blocks:
                return img
            out = audio_attention(self.audio_models[self.audio_cfg.double_blocks.index(i)], feats, img, ref_len, tt)
            return img + torch.cat([torch.zeros_like(img[:, :ref_len]), out * strength], dim=1)

        img = official_blocks(self, img, txt, temb, attn_mask, rope, after_double, is_cache)
        return final_video(dit, img[:, ref_len:], temb, cfg.patch_size, (tt, th, tw))


def audio_attention(block, feats, img, ref_len: int, frames: int):
    """One ``PerceiverAttentionCA`` site: the video tokens (after ``ref_len`` reference tokens) of each latent frame
    attend to that frame's 16 audio tokens (frame 0's 4 tokens prepended 3 more times); ``[B, L_video, D]``."""
    b, d = img.shape[0], img.shape[-1]
    video = img[:, ref_len:].reshape(b, frames, -1, d)
    aligned = torch.cat([feats[:, :1].repeat(1, 3, 1, 1), feats], dim=1).reshape(b, frames, -1, feats.shape[-1])
    return block(aligned, video).reshape(b, -1, d)


def official_blocks(model, img, txt, vec, attn_mask, rope, after_double, is_cache: bool):
    """The official block loop around diffusers' blocks (``model.dit``): double blocks, each followed by
    ``after_double(i, img) -> img``; single blocks, the last one's input kept as ``model.cache``; with
    ``is_cache`` only the last single block, on ``model.cache``. Returns the image-stream tokens."""
    dit = model.dit
    if is_cache:
        img, _ = dit.single_transformer_blocks[-1](*model.cache, vec, attn_mask, rope)
        return img
    for i, block in enumerate(dit.transformer_blocks):
        img, txt = block(img, txt, vec, attn_mask, rope)
        img = after_double(i, img)
    blocks = dit.single_transformer_blocks
    for i, block in enumerate(blocks):
        if i == len(blocks) - 1:
            model.cache = (img, txt)
        img, txt = block(img, txt, vec, attn_mask, rope)
    return img


def final_video(dit, img, vec, patch_size, grid):
    """Final layer and unpatchify of the video tokens: ``[B, C, T, H, W]``."""
    (pt, ph, pw), (tt, th, tw) = patch_size, grid
    img = dit.proj_out(dit.norm_out(img, vec))
    img = img.reshape(img.shape[0], tt, th, tw, -1, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return img.flatten(6, 7).flatten(4, 5).flatten(2, 3)
