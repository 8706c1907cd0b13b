"""HunyuanVideo causal VAE checkpoints (official ``pytorch_model.pt`` or diffusers ``AutoencoderKLHunyuanVideo``;
both use the same keys) into hcjax params.

hcjax param paths spell the reference keys with ``_N`` for ``.N`` (``down_blocks_0/resnets_1/conv1/conv/kernel``
is ``down_blocks.0.resnets.1.conv1.conv.weight``), so the plan follows from the param tree.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from hcjax.configs import VAEConfig, resolve_dtype
from hcjax.convert.rules import Path, Rule, apply_plan, flatten
from hcjax.models.params import abstract_params

# Training-time checkpoints of the official VAE prefix its keys with this (HunyuanCustom keeps only these).
PREFIX = "vae."


def reference_key(path: Path) -> str:
    *modules, leaf = path
    parts = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join(parts + [{"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]])


def vae_plan(targets: Mapping) -> dict[Path, Rule]:
    plan = {}
    for path, target in flatten(targets).items():
        kind = "vector" if path[-1] != "kernel" else ("conv" if len(target.shape) == 5 else "linear")
        plan[path] = Rule((reference_key(path),), kind)
    return plan


def strip_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keys under ``vae.`` without the prefix when the checkpoint has any (other keys are dropped, as the
    reference loader does); the state dict unchanged otherwise."""
    if not any(k.startswith(PREFIX) for k in state_dict):
        return state_dict
    return {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}


def vae_from_torch(state_dict: Mapping[str, Any], cfg: VAEConfig, shapes_only: bool = False) -> dict:
    """hcjax params of ``CausalVAE(cfg)`` from an official or diffusers state dict (numpy arrays or torch tensors;
    a ``vae.`` key prefix is removed). Strict: raises ``CheckpointMismatch`` listing every missing / unexpected /
    mis-shaped key before converting anything."""
    if cfg.blocks != "resnet":
        raise ValueError(f"VAEConfig(blocks={cfg.blocks!r}) has no official or diffusers checkpoint; convert with "
                         "blocks='resnet' (the HunyuanVideo structure)")
    targets = abstract_params(cfg)
    return apply_plan(vae_plan(targets), strip_prefix(state_dict), targets, resolve_dtype(cfg.param_dtype),
                      shapes_only, context=" (HunyuanVideo causal VAE)")
