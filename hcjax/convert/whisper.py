"""``transformers`` Whisper checkpoints into ``WhisperEncoder`` params.

Three key layouts are accepted, told apart by their keys: ``WhisperModel`` (``encoder.*``, ``decoder.*``),
``WhisperForConditionalGeneration`` (``model.encoder.*``, ``model.decoder.*``, ``proj_out.weight``) and a bare
``WhisperEncoder`` (``conv1.weight``, ...). The decoder side (``decoder.*``, ``model.decoder.*``,
``proj_out.*``) is dropped on purpose: the audio paths use the encoder only. Everything else is strict: a missing,
unexpected or mis-shaped key raises one ``CheckpointMismatch`` naming them all (with their full names).

hcjax param paths spell the ``transformers`` keys (``layers/self_attn/q_proj/kernel`` is
``layers.{i}.self_attn.q_proj.weight`` of every layer i; ``scale`` is a LayerNorm ``weight``; the position table
``embed_positions/embedding`` is ``embed_positions.weight``).
"""

from __future__ import annotations

from typing import Any, Mapping

from hcjax.configs import resolve_dtype
from hcjax.convert.rules import Path, Rule, apply_plan, flatten
from hcjax.models.audio.whisper import WhisperEncoderConfig
from hcjax.models.params import abstract_params

# (prefix of the encoder keys, prefixes of the decoder-side keys dropped), tried in this order.
LAYOUTS = (
    ("model.encoder.", ("model.decoder.", "proj_out.")),  # WhisperForConditionalGeneration
    ("encoder.", ("decoder.",)),                          # WhisperModel
    ("", ()),                                             # WhisperEncoder
)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def detect_layout(state_dict: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``(encoder key prefix, ignored prefixes)`` of the first layout with an encoder key in ``state_dict``."""
    for prefix, ignored in LAYOUTS[:-1]:
        if any(k.startswith(prefix + "conv1.") for k in state_dict):
            return prefix, ignored
    return LAYOUTS[-1]


def whisper_plan(targets: Mapping, num_layers: int, prefix: str = "") -> dict[Path, Rule | list[Rule]]:
    plan: dict[Path, Rule | list[Rule]] = {}
    for path, target in flatten(targets).items():
        *modules, leaf = path
        if path == ("embed_positions", "embedding"):
            kind = "table"
        elif leaf == "kernel":
            kind = "conv" if modules[0] in ("conv1", "conv2") else "linear"
        else:
            kind = "vector"
        if modules[0] == "layers":
            rest = ".".join(modules[1:] + [_LEAVES[leaf]])
            plan[path] = [Rule((f"{prefix}layers.{i}.{rest}",), kind) for i in range(num_layers)]
        else:
            plan[path] = Rule((prefix + ".".join(modules + [_LEAVES[leaf]]),), kind)
    return plan


def whisper_encoder_from_torch(state_dict: Mapping[str, Any], cfg: WhisperEncoderConfig,
                               shapes_only: bool = False) -> dict:
    """Params of ``WhisperEncoder(cfg)`` from a ``transformers`` Whisper state dict (numpy arrays or torch
    tensors, also on the meta device with ``shapes_only``). Decoder keys are ignored; raises
    ``CheckpointMismatch`` listing every missing / unexpected / mis-shaped key before converting anything."""
    prefix, ignored = detect_layout(state_dict)
    kept = {k: v for k, v in state_dict.items() if not (ignored and k.startswith(ignored))}
    targets = abstract_params(cfg)
    return apply_plan(whisper_plan(targets, cfg.encoder_layers, prefix), kept, targets,
                      resolve_dtype(cfg.param_dtype), shapes_only,
                      context=f" (Whisper encoder, keys {prefix or 'without prefix'}*)")
