"""LLaVA's image path on top of the CLIP vision tower: feature selection and the ``multi_modal_projector``.

``llava_image_features`` takes hidden state -2 of the vision tower, drops the CLS token and projects
(``[B, 576, 4096]`` for llava-llama-3-8b-v1_1 at 336 px): the features that replace the ``<image>`` token.
``legacy_merge`` puts them into the token embeddings as transformers 4.41.2 (HunyuanCustom's pin) does: in place
of each ``<image>`` token, with that version's position ids and zeroed pad embeddings.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import resolve_dtype
from hcjax.models.text.clip import gelu_erf
from hcjax.nn.linear import Dense

IMAGE_TOKEN = "<image>"       # the text placeholder of an image
IMAGE_SIZE = 336               # llava-llama-3-8b's CLIP ViT-L/14-336 input (24 x 24 patches)


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


def check_merge_inputs(input_ids, attention_mask, image_token_id: int, pad_token_id: int | None,
                       images_per_sample: int = 1) -> None:
    """``legacy_merge``'s checks on concrete ids (skipped for tracers): exactly ``images_per_sample``
    ``image_token_id`` per sample, and every mask-0 position holding ``pad_token_id`` (when given)."""
    if isinstance(input_ids, jax.core.Tracer):
        return
    ids = np.asarray(input_ids)
    counts = (ids == image_token_id).sum(axis=1)
    if (counts != images_per_sample).any():
        raise ValueError(f"each sample needs exactly {images_per_sample} image token(s) ({image_token_id}), one per "
                         f"image; counts {counts.tolist()} (a prompt too long for max_length truncates them away)")
    if pad_token_id is not None and not isinstance(attention_mask, jax.core.Tracer):
        if (ids[np.asarray(attention_mask) == 0] != pad_token_id).any():
            raise ValueError(f"masked positions hold ids other than the tokenizer pad id {pad_token_id}")


def legacy_merge(input_ids: jax.Array, attention_mask: jax.Array, token_embeds: jax.Array,
                 image_features: jax.Array, image_token_id: int, pad_token_id: int | None,
                 config_pad_token_id: int | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """transformers 4.41.2's ``LlavaForConditionalGeneration._merge_input_ids_with_image_features`` (the
    version HunyuanCustom pins) for the same number ``M`` of ``<image>`` tokens in every sample.

    ``input_ids``, ``attention_mask`` ``[B, L]``; ``token_embeds [B, L, D]`` (the ``embed_tokens`` lookup of
    ``input_ids``); ``image_features [B, N, D]`` (one image per sample) or ``[B, M, N, D]`` (the ``k``-th image
    for the ``k``-th ``<image>`` token) -> ``(inputs_embeds [B, L + M (N - 1), D], merged_mask, position_ids
    [B, L + M (N - 1)] int32)``, to run the language model with. Each ``<image>`` token is replaced *in place* by
    its ``N`` features; a token after ``k`` image tokens moves ``k (N - 1)`` positions right. Quirks reproduced:

    * **Mask**: token positions copy the tokenizer mask, feature positions are 1 (``final_attention_mask |=
      image_to_overwrite``); with right padding this is the correct mask ``[1 x (valid + M (N - 1)), 0 x pads]``.
    * **Position ids**: ``cumsum(merged_mask) - 1`` with every mask-0 position set to **1** (not ``0..L-1`` as a
      plain run, or transformers 5, would use); they only change the states at the pad positions.
    * **Pad embeddings**: the embeddings of tokens whose id equals the *LLaVA config's* ``pad_token_id``
      (``config_pad_token_id``; ``None`` means -1, i.e. never) are set to **0**. With a tokenizer whose pad id
      is that id (``pad_token_id == config_pad_token_id``) every pad position gets a zero input; otherwise
      pads keep the pad-token embedding. Valid positions never see pads (causal + key mask), so this too only
      moves the states at the pad positions - which HunyuanCustom's token refiner does read (reference 4.3).
    * **Left-padding test**: 4.41.2 shifts the text by ``nb_image_pad`` when no sample ends in the config pad
      id (e.g. a tokenizer pad id other than the config's); with the same image count in every sample
      ``nb_image_pad = 0``, so the layout above holds whatever the padding side. (Different counts in one batch
      would misplace features in 4.41.2; they are refused here - batch samples by subject count.)

    ``pad_token_id`` (the tokenizer's) is not read by the 4.41.2 rule; for concrete inputs it is checked that
    every mask-0 position holds it, so that the caller's pair of ids says what the zeroing does. 4.41.2 raises
    when the image tokens and the images do not pair up (e.g. one truncated away); so does this, for concrete
    ids. Jittable (the checks are skipped under tracing)."""
    if image_features.ndim == 3:
        image_features = image_features[:, None]
    b, length = input_ids.shape
    _, m, n, d = image_features.shape
    if token_embeds.shape[:2] != (b, length) or image_features.shape[0] != b:
        raise ValueError(f"token_embeds {token_embeds.shape} / image_features {image_features.shape} do not fit "
                         f"input_ids {input_ids.shape}")
    check_merge_inputs(input_ids, attention_mask, image_token_id, pad_token_id, m)
    dtype = image_features.dtype
    is_image_token = input_ids == image_token_id
    new_position = jnp.cumsum(jnp.where(is_image_token, n, 1), axis=1) - 1        # a token's last merged slot
    j = jnp.arange(length + m * (n - 1))
    src = jax.vmap(lambda row: jnp.searchsorted(row, j, side="left"))(new_position)   # token behind each slot
    src = jnp.clip(src, 0, length - 1)
    gather = lambda a: jnp.take_along_axis(a, src, axis=1)                          # noqa: E731
    is_image = gather(is_image_token)
    image_index = gather(jnp.cumsum(is_image_token, axis=1)) - 1                     # k of the image token
    feature_index = j[None] - (gather(new_position) - n + 1)
    flat = jnp.clip(image_index * n + feature_index, 0, m * n - 1)
    image = jnp.take_along_axis(image_features.reshape(b, m * n, d), flat[..., None], axis=1)
    text = jnp.take_along_axis(token_embeds.astype(dtype), src[..., None], axis=1)
    config_pad = -1 if config_pad_token_id is None else config_pad_token_id
    zero = ~is_image & (gather(input_ids) == config_pad)
    embeds = jnp.where(is_image[..., None], image, jnp.where(zero[..., None], jnp.zeros((), dtype), text))
    mask = jnp.where(is_image, 1, gather(attention_mask.astype(jnp.int32)))
    position_ids = jnp.where(mask == 0, 1, jnp.cumsum(mask, axis=1) - 1).astype(jnp.int32)
    return embeds, mask.astype(jnp.int32), position_ids
