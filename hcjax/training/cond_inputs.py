"""Which conditioning inputs training feeds a model: HunyuanVideo-Avatar's (``training.avatar_cond``) for a model
with Avatar mechanisms, else HunyuanCustom's (``training.custom_cond``), else none."""

from __future__ import annotations

from hcjax.training.avatar_cond import avatar_inputs, avatar_record_extras, is_avatar
from hcjax.training.custom_cond import CondSettings, CustomInputs, Extra, custom_inputs
from hcjax.training.custom_cond import record_extras as custom_record_extras


def record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of the keys the mechanisms of ``model`` (a ``Preset`` or ``DiTConfig``) read."""
    return avatar_record_extras(model) if is_avatar(model) else custom_record_extras(model)


def conditioning_inputs(model, settings: CondSettings = CondSettings()) -> CustomInputs | None:
    """The record keys and ``make_cond`` of ``model``'s mechanisms (an ``AvatarInputs`` or a ``CustomInputs``);
    ``None`` for a model whose ``cond`` stays ``None``."""
    return avatar_inputs(model, settings) if is_avatar(model) else custom_inputs(model, settings)
