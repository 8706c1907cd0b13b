"""HunyuanVideo DiT checkpoints (official ``hyvideo`` keys or diffusers ``HunyuanVideoTransformer3DModel``)
into hcjax params.

The official plan follows from the param tree itself: hcjax params mirror the official module names, so a
param path maps to its key by a few spelling rules (``mlp_0`` -> ``mlp.0``, ``kernel`` -> ``weight``, layer
index after a stack name). The diffusers plan renames those keys and splits fused ``qkv`` / ``linear1``
into their diffusers parts; the final layer's ``[shift, scale]`` is ``[scale, shift]`` there.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from hcjax.configs import DiTConfig, resolve_dtype
from hcjax.convert.rules import Path, Rule, flatten, apply_plan
from hcjax.models.params import abstract_params

SOURCES = ("official", "diffusers")
STACKS = ("double_blocks", "single_blocks", "blocks")
# hcjax module names whose official spelling has a "." before an index.
_SEQUENTIAL = re.compile(r"^(mlp|adaLN_modulation|audio_models|audio_adapter_blocks|audio_cross_attn_wrapper)"
                         r"_(\d+)$")


def official_key(path: Path, layer: int | None, mechanisms: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(key, kind)`` of the official tensor behind param ``path`` (of layer ``layer`` in a stack). The params
    of a conditioning mechanism live under its name, which the official keys do not have (``audio/audio_proj``
    is ``audio_proj``)."""
    *modules, leaf = path
    if modules and modules[0] in mechanisms:
        modules = modules[1:]
    parts = []
    for m in modules:
        parts.append(_SEQUENTIAL.sub(r"\1.\2", m))
        if m in STACKS:
            parts.append(str(layer))
    suffix = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    return ".".join(parts + [suffix]), leaf


def official_plan(targets: Mapping, mechanisms: tuple[str, ...] = ()) -> dict[Path, Any]:
    """One rule per param (per layer for stacked params), from the official key of each; ``mechanisms``: the
    names of the config's conditioning mechanisms."""
    plan = {}
    for path, target in flatten(targets).items():
        stacked = any(m in STACKS for m in path[:-1])
        layers = range(target.shape[0]) if stacked else [None]
        rules = []
        for layer in layers:
            key, leaf = official_key(path, layer, mechanisms)
            ndim = len(target.shape) - stacked
            kind = "vector" if leaf != "kernel" else ("conv" if ndim == 5 else "linear")
            rules.append(Rule((key,), kind))
        plan[path] = rules if stacked else rules[0]
    return plan


# Official module path (regex) -> diffusers module path(s); "{0}" is the captured layer index.
_DIFFUSERS_MODULES: list[tuple[str, tuple[str, ...]]] = [
    (r"img_in\.proj", ("x_embedder.proj",)),
    (r"time_in\.mlp\.0", ("time_text_embed.timestep_embedder.linear_1",)),
    (r"time_in\.mlp\.2", ("time_text_embed.timestep_embedder.linear_2",)),
    (r"guidance_in\.mlp\.0", ("time_text_embed.guidance_embedder.linear_1",)),
    (r"guidance_in\.mlp\.2", ("time_text_embed.guidance_embedder.linear_2",)),
    (r"vector_in\.in_layer", ("time_text_embed.text_embedder.linear_1",)),
    (r"vector_in\.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    (r"txt_in\.input_embedder", ("context_embedder.proj_in",)),
    (r"txt_in\.t_embedder\.mlp\.0", ("context_embedder.time_text_embed.timestep_embedder.linear_1",)),
    (r"txt_in\.t_embedder\.mlp\.2", ("context_embedder.time_text_embed.timestep_embedder.linear_2",)),
    (r"txt_in\.c_embedder\.linear_1", ("context_embedder.time_text_embed.text_embedder.linear_1",)),
    (r"txt_in\.c_embedder\.linear_2", ("context_embedder.time_text_embed.text_embedder.linear_2",)),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(norm1|norm2)",
     ("context_embedder.token_refiner.refiner_blocks.{0}.{1}",)),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.self_attn_qkv",
     tuple(f"context_embedder.token_refiner.refiner_blocks.{{0}}.attn.to_{p}" for p in "qkv")),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.self_attn_proj",
     ("context_embedder.token_refiner.refiner_blocks.{0}.attn.to_out.0",)),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.mlp\.fc1",
     ("context_embedder.token_refiner.refiner_blocks.{0}.ff.net.0.proj",)),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.mlp\.fc2",
     ("context_embedder.token_refiner.refiner_blocks.{0}.ff.net.2",)),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.adaLN_modulation\.1",
     ("context_embedder.token_refiner.refiner_blocks.{0}.norm_out.linear",)),
    (r"double_blocks\.(\d+)\.img_mod\.linear", ("transformer_blocks.{0}.norm1.linear",)),
    (r"double_blocks\.(\d+)\.txt_mod\.linear", ("transformer_blocks.{0}.norm1_context.linear",)),
    (r"double_blocks\.(\d+)\.img_attn_qkv", tuple(f"transformer_blocks.{{0}}.attn.to_{p}" for p in "qkv")),
    (r"double_blocks\.(\d+)\.txt_attn_qkv", tuple(f"transformer_blocks.{{0}}.attn.add_{p}_proj" for p in "qkv")),
    (r"double_blocks\.(\d+)\.img_attn_q_norm", ("transformer_blocks.{0}.attn.norm_q",)),
    (r"double_blocks\.(\d+)\.img_attn_k_norm", ("transformer_blocks.{0}.attn.norm_k",)),
    (r"double_blocks\.(\d+)\.txt_attn_q_norm", ("transformer_blocks.{0}.attn.norm_added_q",)),
    (r"double_blocks\.(\d+)\.txt_attn_k_norm", ("transformer_blocks.{0}.attn.norm_added_k",)),
    (r"double_blocks\.(\d+)\.img_attn_proj", ("transformer_blocks.{0}.attn.to_out.0",)),
    (r"double_blocks\.(\d+)\.txt_attn_proj", ("transformer_blocks.{0}.attn.to_add_out",)),
    (r"double_blocks\.(\d+)\.img_mlp\.fc1", ("transformer_blocks.{0}.ff.net.0.proj",)),
    (r"double_blocks\.(\d+)\.img_mlp\.fc2", ("transformer_blocks.{0}.ff.net.2",)),
    (r"double_blocks\.(\d+)\.txt_mlp\.fc1", ("transformer_blocks.{0}.ff_context.net.0.proj",)),
    (r"double_blocks\.(\d+)\.txt_mlp\.fc2", ("transformer_blocks.{0}.ff_context.net.2",)),
    (r"single_blocks\.(\d+)\.linear1", tuple(f"single_transformer_blocks.{{0}}.{p}" for p in
                                            ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"))),
    (r"single_blocks\.(\d+)\.linear2", ("single_transformer_blocks.{0}.proj_out",)),
    (r"single_blocks\.(\d+)\.q_norm", ("single_transformer_blocks.{0}.attn.norm_q",)),
    (r"single_blocks\.(\d+)\.k_norm", ("single_transformer_blocks.{0}.attn.norm_k",)),
    (r"single_blocks\.(\d+)\.modulation\.linear", ("single_transformer_blocks.{0}.norm.linear",)),
    (r"final_layer\.linear", ("proj_out",)),
    (r"final_layer\.adaLN_modulation\.1", ("norm_out.linear",)),
]
_SWAPPED = {"final_layer.adaLN_modulation.1"}


def diffusers_rule(rule: Rule, cfg: DiTConfig) -> Rule:
    """The diffusers counterpart of an official single-key rule."""
    module, suffix = rule.keys[0].rsplit(".", 1)
    for pattern, targets in _DIFFUSERS_MODULES:
        match = re.fullmatch(pattern, module)
        if match:
            keys = tuple(t.format(*match.groups()) + "." + suffix for t in targets)
            d = cfg.hidden_size
            parts = None if len(keys) == 1 else ((d,) * 3 if len(keys) == 3 else (d, d, d, cfg.mlp_dim))
            return Rule(keys, rule.kind, parts, swap_halves=module in _SWAPPED)
    raise KeyError(f"no diffusers name for official key {rule.keys[0]!r}")


def diffusers_plan(targets: Mapping, cfg: DiTConfig) -> dict[Path, Any]:
    if cfg.mechanisms and any(m.name != "token_replace" for m in cfg.mechanisms):
        raise ValueError("diffusers has no format for the HunyuanCustom / Avatar / HuMo conditioning "
                         f"({', '.join(m.name for m in cfg.mechanisms)}): convert the official checkpoint "
                         "with source='official'")
    plan = {}
    for path, entry in official_plan(targets).items():
        plan[path] = ([diffusers_rule(r, cfg) for r in entry] if isinstance(entry, list)
                      else diffusers_rule(entry, cfg))
    return plan


def dit_from_torch(state_dict: Mapping[str, Any], cfg: DiTConfig, source: str = "official",
                   shapes_only: bool = False) -> dict:
    """hcjax params of ``HunyuanVideoDiT(cfg)`` from an official or diffusers state dict (numpy arrays or torch
    tensors). Strict: raises ``CheckpointMismatch`` listing every missing / unexpected / mis-shaped key before
    converting anything. ``shapes_only`` runs all checks on shapes alone (meta tensors work) and returns the
    param shapes."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    targets = abstract_params(cfg)
    names = tuple(m.name for m in cfg.mechanisms)
    plan = official_plan(targets, names) if source == "official" else diffusers_plan(targets, cfg)
    return apply_plan(plan, state_dict, targets, resolve_dtype(cfg.param_dtype), shapes_only,
                      context=f" (HunyuanVideo DiT, source={source!r})")
