"""LLaVA's image path - the CLIP vision tower, the ``multi_modal_projector`` and the config facts of the merge -
from a ``transformers`` ``LlavaConfig`` and a LLaVA state dict."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from hcjax.convert.clip import clip_vision_from_torch, llava_projector_from_torch
from hcjax.models.text.clip import CLIPVisionConfig
from hcjax.models.text.llava import LlavaProjector

STRATEGIES = ("default", "full")


@dataclasses.dataclass
class LlavaImagePath:
    """What turns an image into the features that replace LLaVA's ``<image>`` token, and where they go.

    ``image_token_index`` / ``config_pad_token_id``: the LLaVA config's ``image_token_index`` and ``pad_token_id``
    (None when it has none; see ``models.text.llava.legacy_merge``). ``feature_layer`` / ``select_strategy``: its
    ``vision_feature_layer`` (an index into the vision tower's hidden states, or several) and
    ``vision_feature_select_strategy``."""

    vision_cfg: CLIPVisionConfig
    vision_params: Any
    projector: LlavaProjector
    projector_params: Any
    image_token_index: int
    config_pad_token_id: int | None
    feature_layer: int | tuple[int, ...] = -2
    select_strategy: str = "default"

    @property
    def feature_layers(self) -> tuple[int, ...]:
        return (self.feature_layer,) if isinstance(self.feature_layer, int) else tuple(self.feature_layer)


def projector_from_transformers(hf: Any, dtype: str = "float32") -> LlavaProjector:
    """The ``LlavaProjector`` of a ``transformers.LlavaConfig`` (GELU only, as every released LLaVA)."""
    if getattr(hf, "projector_hidden_act", "gelu") != "gelu":
        raise ValueError(f"projector_hidden_act {hf.projector_hidden_act!r} is not supported; only 'gelu'")
    layers = hf.vision_feature_layer
    n = 1 if isinstance(layers, int) else len(layers)
    return LlavaProjector(text_hidden=hf.text_config.hidden_size, vision_hidden=n * hf.vision_config.hidden_size,
                          bias=getattr(hf, "multimodal_projector_bias", True), dtype=dtype, param_dtype=dtype)


def llava_image_path_from_torch(state_dict: Mapping[str, Any], hf: Any, dtype: str = "float32") -> LlavaImagePath:
    """The image path of a LLaVA checkpoint: ``state_dict`` (numpy arrays or torch tensors) with its
    ``transformers.LlavaConfig`` ``hf``; params in ``dtype``."""
    vision_cfg = CLIPVisionConfig.from_transformers(hf.vision_config, dtype=dtype, param_dtype=dtype)
    projector = projector_from_transformers(hf, dtype)
    layer = hf.vision_feature_layer
    return LlavaImagePath(vision_cfg, clip_vision_from_torch(state_dict, vision_cfg), projector,
                          llava_projector_from_torch(state_dict, projector), hf.image_token_index,
                          getattr(hf, "pad_token_id", None), layer if isinstance(layer, int) else tuple(layer),
                          hf.vision_feature_select_strategy)
