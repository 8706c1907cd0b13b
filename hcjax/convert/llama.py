"""Hugging Face Llama checkpoints (``LlamaModel``, ``LlamaForCausalLM`` or the language part of a LLaVA
checkpoint) into ``LlamaEncoder`` params. Strict as the DiT's: every tensor of the language model is used.

The language model's keys are found under a prefix (``""``, ``model.``, ``model.language_model.`` or
``language_model.model.``, detected from ``embed_tokens.weight``). Keys of the other parts of the same
checkpoint (``lm_head``, a vision tower, a multi-modal projector) and rotary ``inv_freq`` buffers are left
alone; anything else is reported.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from hcjax.convert.rules import Path, Rule, apply_plan, flatten
from hcjax.models.params import abstract_params
from hcjax.models.text.llama import LlamaConfig

PREFIXES = ("", "model.", "model.language_model.", "language_model.model.")
OTHER_PARTS = ("lm_head.", "language_model.lm_head.", "vision_tower.", "model.vision_tower.",
               "multi_modal_projector.", "model.multi_modal_projector.")


def _hf_key(path: Path, layer: int | None) -> str:
    *modules, leaf = path
    name = {"kernel": "weight", "scale": "weight", "embedding": "weight"}[leaf]
    if layer is None:
        return ".".join([*modules, name])
    return ".".join(["layers", str(layer), *modules[1:], name])


def llama_plan(targets: Mapping, num_layers: int, prefix: str) -> dict[Path, Any]:
    plan = {}
    for path, target in flatten(targets).items():
        if path[0] == "layers":
            kind = "linear" if path[-1] == "kernel" else "vector"
            plan[path] = [Rule((prefix + _hf_key(path, i),), kind) for i in range(num_layers)]
        else:
            plan[path] = Rule((prefix + _hf_key(path, None),), "table" if path[-1] == "embedding" else "vector")
    return plan


def find_prefix(state_dict: Mapping[str, Any]) -> str:
    for prefix in PREFIXES:
        if prefix + "embed_tokens.weight" in state_dict:
            return prefix
    return ""   # the strict check then reports every missing key


def llama_from_torch(state_dict: Mapping[str, Any], cfg: LlamaConfig, shapes_only: bool = False) -> dict:
    """``LlamaEncoder(cfg)`` params from a Hugging Face state dict (numpy arrays or torch tensors)."""
    from hcjax.configs import resolve_dtype

    prefix = find_prefix(state_dict)
    inv_freq = re.compile(r".*rotary_emb\.inv_freq$")
    own = {k: v for k, v in state_dict.items()
           if not (k.startswith(OTHER_PARTS) and not k.startswith(prefix + "layers.")) and not inv_freq.match(k)}
    targets = abstract_params(cfg)
    return apply_plan(llama_plan(targets, cfg.num_layers, prefix), own, targets, resolve_dtype(cfg.param_dtype),
                      shapes_only, context=" (Llama text encoder)")
