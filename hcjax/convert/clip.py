"""CLIP text / vision encoders and the LLaVA projector from Hugging Face ``transformers`` state dicts.

hcjax params mirror the ``transformers`` module names, so the plan follows from the param tree (``kernel`` ->
``weight``, ``embedding`` -> ``weight``, a layer index after ``layers``). Where the modules sit depends on the
source, so the key prefix is detected from a known list (or given as ``prefix``):

* text: ``""`` (``transformers`` 5 ``CLIPTextModel.state_dict()``: no ``text_model.`` level any more),
  ``"text_model."`` (checkpoints saved by transformers 4, e.g. HunyuanVideo's ``text_encoder_2``, and
  ``CLIPModel``);
* vision: ``""`` (transformers 5 ``CLIPVisionModel``), ``"vision_model."`` (transformers 4 files,
  ``CLIPModel``), ``"vision_tower.vision_model."`` (LLaVA files, e.g. llava-llama-3-8b-v1_1-transformers),
  ``"model.vision_tower."`` (transformers 5 ``LlavaForConditionalGeneration``), ``"vision_tower."`` (its files:
  transformers 5 ``save_pretrained`` writes them without the ``vision_model.`` level of transformers 4 files),
  ``"model.vision_tower.vision_model."`` (transformers 4.5x ``LlavaForConditionalGeneration``);
* projector: ``""``, ``"multi_modal_projector."`` (LLaVA files), ``"model.multi_modal_projector."``
  (transformers 5 ``LlavaForConditionalGeneration``).

Strict within the prefix: every key under it must be used and every param filled, else ``CheckpointMismatch``
lists all problems (keys named in full). With a non-empty prefix, keys outside it belong to other models of
the same checkpoint (the LLM, the other CLIP tower) and are left alone. The ``embeddings.position_ids``
buffer that older checkpoints carry is dropped explicitly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from hcjax.configs import resolve_dtype
from hcjax.convert.rules import Path, Rule, apply_plan, flatten
from hcjax.models.params import abstract_params
from hcjax.models.text.clip import CLIPTextConfig, CLIPVisionConfig
from hcjax.models.text.llava import LlavaProjector

TEXT_PREFIXES = ("", "text_model.")
VISION_PREFIXES = ("", "vision_model.", "vision_tower.vision_model.", "model.vision_tower.", "vision_tower.",
                   "model.vision_tower.vision_model.")
PROJECTOR_PREFIXES = ("", "multi_modal_projector.", "model.multi_modal_projector.")
# A key (after the prefix) whose presence identifies each model's prefix.
_ANCHORS = {"text": "embeddings.token_embedding.weight", "vision": "embeddings.patch_embedding.weight",
            "projector": "linear_1.weight"}
# Non-persistent buffers that older transformers versions saved; dropped when present.
_BUFFERS = ("embeddings.position_ids",)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def hf_key(path: Path, layer: int | None) -> tuple[str, str]:
    """``(key, kind)`` of the ``transformers`` tensor behind param ``path`` (of layer ``layer`` in the stack),
    without prefix."""
    *modules, leaf = path
    if leaf == "class_embedding":
        return ".".join([*modules, leaf]), "vector"
    parts = []
    for m in modules:
        parts.append(m)
        if m == "layers":
            parts.append(str(layer))
    kind = {"kernel": "linear", "embedding": "table"}.get(leaf, "vector")
    if leaf == "kernel" and modules[-1] == "patch_embedding":
        kind = "conv"
    return ".".join(parts + [_LEAVES[leaf]]), kind


def clip_plan(targets: Mapping, prefix: str = "") -> dict[Path, Any]:
    """One rule per param (one per layer for the stacked encoder layers)."""
    plan = {}
    for path, target in flatten(targets).items():
        stacked = "layers" in path[:-1]
        rules = []
        for layer in (range(target.shape[0]) if stacked else [None]):
            key, kind = hf_key(path, layer)
            rules.append(Rule((prefix + key,), kind))
        plan[path] = rules if stacked else rules[0]
    return plan


def detect_prefix(state_dict: Mapping[str, Any], model: str, prefixes: Sequence[str]) -> str:
    """The one prefix of ``prefixes`` under which ``state_dict`` holds ``model``'s anchor key; ``""`` when none
    does (the strict check then reports every key)."""
    found = [p for p in prefixes if p + _ANCHORS[model] in state_dict]
    if len(found) > 1:
        raise ValueError(f"the state dict holds several {model} models (key prefixes {found}); pass prefix=")
    return found[0] if found else ""


def _select(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys under ``prefix`` (all keys for ``""``) without the known stale buffers."""
    drop = {prefix + b for b in _BUFFERS}
    return {k: v for k, v in state_dict.items() if k.startswith(prefix) and k not in drop}


def _convert(state_dict, targets, dtype, shapes_only, prefix, model, prefixes, name):
    prefix = detect_prefix(state_dict, model, prefixes) if prefix is None else prefix
    where = f", keys under {prefix!r}" if prefix else ""
    return apply_plan(clip_plan(targets, prefix), _select(state_dict, prefix), targets, dtype, shapes_only,
                      context=f" ({name}{where})")


def clip_text_from_torch(state_dict: Mapping[str, Any], cfg: CLIPTextConfig, shapes_only: bool = False,
                         prefix: str | None = None) -> dict:
    """hcjax params of ``CLIPTextModel(cfg)`` from a ``transformers`` ``CLIPTextModel`` / ``CLIPModel`` state
    dict (numpy arrays or torch tensors). ``prefix``: the key prefix of the text model (detected if None)."""
    return _convert(state_dict, abstract_params(cfg), resolve_dtype(cfg.param_dtype), shapes_only, prefix,
                    "text", TEXT_PREFIXES, "CLIP text model")


def clip_vision_from_torch(state_dict: Mapping[str, Any], cfg: CLIPVisionConfig, shapes_only: bool = False,
                           prefix: str | None = None) -> dict:
    """hcjax params of ``CLIPVisionModel(cfg)`` from a ``CLIPVisionModel``, ``CLIPModel`` or LLaVA state dict
    (the vision tower). ``prefix``: the key prefix of the vision model (detected if None)."""
    return _convert(state_dict, abstract_params(cfg), resolve_dtype(cfg.param_dtype), shapes_only, prefix,
                    "vision", VISION_PREFIXES, "CLIP vision model")


def llava_projector_from_torch(state_dict: Mapping[str, Any], projector: LlavaProjector | None = None,
                               shapes_only: bool = False, prefix: str | None = None) -> dict:
    """hcjax params of ``projector`` (default: llava-llama-3-8b-v1_1's, 1024 -> 4096) from a LLaVA state dict
    or the projector's own. ``prefix``: the key prefix of the projector (detected if None)."""
    projector = LlavaProjector() if projector is None else projector
    return _convert(state_dict, abstract_params(projector), resolve_dtype(projector.param_dtype),
                    shapes_only, prefix, "projector", PROJECTOR_PREFIXES, "LLaVA multi_modal_projector")
