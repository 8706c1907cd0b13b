"""Seeding a run from a model directory (``model.init_from``) of the same model, or of the model less the
mechanisms that no released checkpoint has.

Rule: a mechanism whose config class sets ``addable = True`` (the Avatar emotion module, HuMo's mechanisms) may be
absent from the model directory: a ``hunyuan-avatar`` directory (the official checkpoint, converted) seeds
``hunyuan-avatar-emotion``, whose ``emotion`` params are then freshly initialised. A model without guidance embedding
may also start from the guidance-distilled backbone, whose ``guidance_in`` is then left out: ``hunyuan-video-t2v``
seeds ``humo``. Every other param must be in the directory; anything else missing or extra is an error.
"""

from __future__ import annotations

from typing import Any

from flax import traverse_util

from hcjax import configs
from hcjax.models.params import abstract_params, init_params


def addable(dit_cfg: configs.DiTConfig) -> tuple[str, ...]:
    """Names of the mechanisms of ``dit_cfg`` whose params a seeding model directory may lack."""
    return tuple(m.name for m in dit_cfg.mechanisms if getattr(m, "addable", False))


def check_preset(path: str, stored: str, preset: configs.Preset) -> None:
    """Whether a model directory of preset ``stored`` can seed ``preset``: the same preset, or one whose DiT is
    ``preset``'s without its addable mechanisms; else one ``ValueError``."""
    if stored == preset.name:
        return
    kept = tuple(m for m in preset.dit.mechanisms if not getattr(m, "addable", False))
    if len(kept) < len(preset.dit.mechanisms):
        other = configs.get(stored).dit
        base = preset.dit.replace(mechanisms=kept)
        if other == base or (not base.guidance_embed and other == base.replace(guidance_embed=True)):
            return
    extra = (f" (or a model of {preset.name!r} without its {', '.join(addable(preset.dit))} mechanism)"
             if addable(preset.dit) else "")
    raise ValueError(f"model.init_from {path} holds a {stored!r} model, but model.preset is {preset.name!r}"
                     f"{extra}; set --config.model.preset={stored} or convert the right checkpoint")


def complete(params: Any, dit_cfg: configs.DiTConfig, seed: int) -> Any:
    """``params`` of a model directory with the addable mechanisms' params it lacks freshly initialised (seed
    ``seed``; under ``jit`` only those are computed) and, for a model without guidance embedding, a distilled
    backbone's ``guidance_in`` left out. A ``ValueError`` if any other param is missing, extra, or of another
    shape (e.g. a ``model.depth_*`` override)."""
    have = traverse_util.flatten_dict(params)
    want = traverse_util.flatten_dict(abstract_params(dit_cfg))
    if addable(dit_cfg) and not dit_cfg.guidance_embed:
        have = {k: v for k, v in have.items() if k[0] != "guidance_in"}
    allowed = set(addable(dit_cfg))
    missing = [k for k in want if k not in have]
    problems = [f"missing {'/'.join(k)}" for k in missing if k[0] not in allowed]
    problems += [f"unexpected {'/'.join(k)}" for k in have if k not in want]
    problems += [f"{'/'.join(k)} is {tuple(v.shape)}, the model's {tuple(want[k].shape)}"
                 for k, v in have.items() if k in want and tuple(v.shape) != tuple(want[k].shape)]
    if problems:
        raise ValueError(f"model.init_from params do not fit the model ({len(problems)} keys: "
                         f"{', '.join(problems[:5])}{', ...' if len(problems) > 5 else ''}); only the params of "
                         f"{', '.join(sorted(allowed)) or 'no mechanism'} may be missing (freshly initialised)")
    if not missing:
        return traverse_util.unflatten_dict(have)
    fresh = traverse_util.flatten_dict(init_params(dit_cfg, seed))
    return traverse_util.unflatten_dict(have | {k: fresh[k] for k in missing})
