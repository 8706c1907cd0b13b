"""Which conditioning inputs training feeds a model: HuMo's (``training.humo_cond``) for a model with HuMo's
mechanisms, HunyuanVideo-Avatar's (``training.avatar_cond``) for one with Avatar mechanisms, the clean first frame
(``training.i2v_cond``) for an image-to-video model, else HunyuanCustom's (``training.custom_cond``), else none."""

from __future__ import annotations

from hcjax.training.avatar_cond import avatar_inputs, avatar_record_extras, is_avatar
from hcjax.training.custom_cond import CondSettings, CustomInputs, Extra, custom_inputs
from hcjax.training.custom_cond import record_extras as custom_record_extras
from hcjax.training.humo_cond import humo_inputs, humo_record_extras, is_humo
from hcjax.training.i2v_cond import i2v_inputs, i2v_record_extras, is_i2v


def record_extras(model) -> tuple[Extra, ...]:
    """``DataSpec.extra`` of the keys the mechanisms of ``model`` (a ``Preset`` or ``DiTConfig``) read."""
    if is_humo(model):
        return humo_record_extras(model)
    if is_i2v(model):
        return i2v_record_extras(model)
    return avatar_record_extras(model) if is_avatar(model) else custom_record_extras(model)


def conditioning_inputs(model, settings: CondSettings = CondSettings()) -> CustomInputs | None:
    """The record keys and ``make_cond`` of ``model``'s mechanisms (a ``HumoInputs``, an ``AvatarInputs``, an
    ``I2VInputs`` or a ``CustomInputs``); ``None`` for a model that reads no record keys."""
    if is_humo(model):
        return humo_inputs(model, settings)
    if settings.image_dropout:
        raise ValueError(f"cond.image_dropout is {settings.image_dropout}, but only HuMo models drop their reference "
                         "image; leave it at 0")
    if is_i2v(model):
        return i2v_inputs(model, settings)
    return avatar_inputs(model, settings) if is_avatar(model) else custom_inputs(model, settings)
