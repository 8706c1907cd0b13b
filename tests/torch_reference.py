"""PyTorch references for the tests: tiny random-init diffusers models, and an independent re-statement of
the official <-> diffusers key mapping of the reference spec (section 2.3), used to produce official-layout
state dicts from diffusers ones."""

from __future__ import annotations

import re

import numpy as np
import torch

from hcjax.configs import DiTConfig


def tiny_diffusers_dit(cfg: DiTConfig, seed: int = 0, image_condition_type: str | None = None):
    """A random-init ``HunyuanVideoTransformer3DModel`` with the structure of ``cfg`` (fp32, eval mode);
    ``image_condition_type="token_replace"`` gives the I2V variant."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.depth_double, num_single_layers=cfg.depth_single,
        num_refiner_layers=cfg.refiner_depth, mlp_ratio=cfg.mlp_ratio, patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0], guidance_embeds=cfg.guidance_embed, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim, rope_theta=cfg.rope_theta, rope_axes_dim=cfg.rope_axes,
        image_condition_type=image_condition_type,
    ).eval()


_RENAMES = [  # diffusers prefix -> official prefix, for keys that are renamed only
    ("x_embedder.proj.", "img_in.proj."),
    ("time_text_embed.timestep_embedder.linear_1.", "time_in.mlp.0."),
    ("time_text_embed.timestep_embedder.linear_2.", "time_in.mlp.2."),
    ("time_text_embed.guidance_embedder.linear_1.", "guidance_in.mlp.0."),
    ("time_text_embed.guidance_embedder.linear_2.", "guidance_in.mlp.2."),
    ("time_text_embed.text_embedder.linear_1.", "vector_in.in_layer."),
    ("time_text_embed.text_embedder.linear_2.", "vector_in.out_layer."),
    ("context_embedder.proj_in.", "txt_in.input_embedder."),
    ("context_embedder.time_text_embed.timestep_embedder.linear_1.", "txt_in.t_embedder.mlp.0."),
    ("context_embedder.time_text_embed.timestep_embedder.linear_2.", "txt_in.t_embedder.mlp.2."),
    ("context_embedder.time_text_embed.text_embedder.linear_1.", "txt_in.c_embedder.linear_1."),
    ("context_embedder.time_text_embed.text_embedder.linear_2.", "txt_in.c_embedder.linear_2."),
    ("proj_out.", "final_layer.linear."),
]
_REFINER = {"norm1": "norm1", "norm2": "norm2", "attn.to_out.0": "self_attn_proj", "ff.net.0.proj": "mlp.fc1",
            "ff.net.2": "mlp.fc2", "norm_out.linear": "adaLN_modulation.1"}
_DOUBLE = {"norm1.linear": "img_mod.linear", "norm1_context.linear": "txt_mod.linear",
           "attn.norm_q": "img_attn_q_norm", "attn.norm_k": "img_attn_k_norm",
           "attn.norm_added_q": "txt_attn_q_norm", "attn.norm_added_k": "txt_attn_k_norm",
           "attn.to_out.0": "img_attn_proj", "attn.to_add_out": "txt_attn_proj",
           "ff.net.0.proj": "img_mlp.fc1", "ff.net.2": "img_mlp.fc2",
           "ff_context.net.0.proj": "txt_mlp.fc1", "ff_context.net.2": "txt_mlp.fc2"}
_SINGLE = {"proj_out": "linear2", "attn.norm_q": "q_norm", "attn.norm_k": "k_norm", "norm.linear": "modulation.linear"}


def diffusers_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``hyvideo`` state dict from a diffusers one: renames, fused qkv / linear1, swapped final halves."""
    out, used = {}, set()

    def fuse(dst: str, srcs: list[str]):
        for suffix in ("weight", "bias"):
            out[f"{dst}.{suffix}"] = torch.cat([sd[f"{s}.{suffix}"] for s in srcs], dim=0)
            used.update(f"{s}.{suffix}" for s in srcs)

    for key, value in sd.items():
        for src, dst in _RENAMES:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                used.add(key)
        for pattern, table, prefix in [
            (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.(.+)\.(weight|bias)", _REFINER,
             "txt_in.individual_token_refiner.blocks"),
            (r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)", _DOUBLE, "double_blocks"),
            (r"single_transformer_blocks\.(\d+)\.(.+)\.(weight|bias)", _SINGLE, "single_blocks"),
        ]:
            m = re.fullmatch(pattern, key)
            if m and m.group(2) in table:
                out[f"{prefix}.{m.group(1)}.{table[m.group(2)]}.{m.group(3)}"] = value
                used.add(key)
    layers = lambda pat: sorted({int(m.group(1)) for k in sd for m in [re.match(pat, k)] if m})  # noqa: E731
    for j in layers(r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\."):
        p = f"context_embedder.token_refiner.refiner_blocks.{j}.attn"
        fuse(f"txt_in.individual_token_refiner.blocks.{j}.self_attn_qkv", [f"{p}.to_q", f"{p}.to_k", f"{p}.to_v"])
    for i in layers(r"transformer_blocks\.(\d+)\."):
        p = f"transformer_blocks.{i}.attn"
        fuse(f"double_blocks.{i}.img_attn_qkv", [f"{p}.to_q", f"{p}.to_k", f"{p}.to_v"])
        fuse(f"double_blocks.{i}.txt_attn_qkv", [f"{p}.add_q_proj", f"{p}.add_k_proj", f"{p}.add_v_proj"])
    for i in layers(r"single_transformer_blocks\.(\d+)\."):
        p = f"single_transformer_blocks.{i}"
        fuse(f"single_blocks.{i}.linear1", [f"{p}.attn.to_q", f"{p}.attn.to_k", f"{p}.attn.to_v", f"{p}.proj_mlp"])
    for suffix in ("weight", "bias"):
        scale, shift = sd[f"norm_out.linear.{suffix}"].chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = torch.cat([shift, scale], dim=0)
        used.add(f"norm_out.linear.{suffix}")
    unused = set(sd) - used
    assert not unused, f"test mapping left diffusers keys unmapped: {sorted(unused)[:5]}"
    return out


def to_channels_last(x: torch.Tensor) -> np.ndarray:
    """``[B, C, T, H, W]`` torch -> ``[B, T, H, W, C]`` numpy."""
    return x.permute(0, 2, 3, 4, 1).numpy()


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def tiny_diffusers_vae(cfg, seed: int = 0):
    """A random-init ``AutoencoderKLHunyuanVideo`` with the structure of ``cfg`` (a ``VAEConfig``), fp32, eval
    mode, frame-wise tiling off (untiled reference). GroupNorm affine params are perturbed away from 1 / 0 so
    that they matter."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    model = AutoencoderKLHunyuanVideo(
        in_channels=cfg.in_channels, out_channels=cfg.in_channels, latent_channels=cfg.latent_channels,
        block_out_channels=cfg.block_channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_groups, scaling_factor=cfg.scaling_factor,
        spatial_compression_ratio=cfg.spatial_ratio, temporal_compression_ratio=cfg.temporal_ratio,
    ).eval()
    model.use_framewise_encoding = model.use_framewise_decoding = False
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def to_channels_first(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x))).permute(0, 4, 1, 2, 3)
