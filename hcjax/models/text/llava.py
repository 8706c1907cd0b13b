"""LLaVA's image path on top of the CLIP vision tower: feature selection and the ``multi_modal_projector``.

``llava_image_features`` takes hidden state -2 of the vision tower, drops the CLS token and projects
(``[B, 576, 4096]`` for llava-llama-3-8b-v1_1 at 336 px): the features that replace the ``<image>`` token.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.models.text.clip import gelu_erf
from hcjax.nn.linear import Dense


class LlavaProjector(nn.Module):
    """LLaVA's ``multi_modal_projector``: ``linear_1 -> GELU (erf) -> linear_2``, ``vision_hidden`` (times the
    number of feature layers) -> ``text_hidden``. Defaults: llava-llama-3-8b-v1_1 (1024 -> 4096)."""

    text_hidden: int = 4096
    vision_hidden: int = 1024
    bias: bool = True
    dtype: Any = "float32"
    param_dtype: Any = "float32"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        if features.shape[-1] != self.vision_hidden:
            raise ValueError(f"projector expects {self.vision_hidden} features, got {features.shape[-1]}")
        kw = dict(dtype=resolve_dtype(self.dtype), param_dtype=resolve_dtype(self.param_dtype), use_bias=self.bias)
        h = Dense(self.text_hidden, ("embed", "mlp"), name="linear_1", **kw)(features)
        return Dense(self.text_hidden, ("mlp", "embed"), name="linear_2", **kw)(gelu_erf(h))


def select_image_features(hidden_states: jax.Array | Sequence[jax.Array], feature_layer: int | Sequence[int] = -2,
                          strategy: str = "default") -> jax.Array:
    """LLaVA's feature selection: ``hidden_states[feature_layer]`` (a list of layers is concatenated on the
    feature axis), without the CLS token for ``strategy="default"``, all tokens for ``"full"``."""
    if strategy not in ("default", "full"):
        raise ValueError(f"unknown vision_feature_select_strategy {strategy!r}; use 'default' or 'full'")
    layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
    feats = [hidden_states[i] for i in layers]
    if strategy == "default":
        feats = [f[:, 1:] for f in feats]
    return feats[0] if len(feats) == 1 else jnp.concatenate(feats, axis=-1)


def llava_image_features(hidden_states: jax.Array | Sequence[jax.Array], projector_params: Any,
                         projector: LlavaProjector | None = None, feature_layer: int | Sequence[int] = -2,
                         strategy: str = "default") -> jax.Array:
    """``LlavaModel.get_image_features``: selected vision states through the projector -> ``[B, T', text]``
    (``[B, 576, 4096]`` for llava-llama-3-8b at 336 px)."""
    projector = LlavaProjector() if projector is None else projector
    params = projector_params.get("params", projector_params) if isinstance(projector_params, dict) else \
        projector_params
    return projector.apply({"params": params}, select_image_features(hidden_states, feature_layer, strategy))
