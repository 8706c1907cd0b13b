"""HunyuanVideo-I2V's own prompt encoding: the prompt in a template whose system header holds an ``<image>``
token, through the full LLaVA (CLIP vision tower + projector + Llama-3), as diffusers'
``HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds`` runs it on transformers 5.

Official sizes (N = 576 image features, crop 103, 256 prompt tokens), for one prompt:

* **Text**: ``I2V.format(prompt)`` (the prompt is not stripped), tokenised with right padding / truncation
  to ``256 + 103 = 359`` ids. BOS + ``<|start_header_id|>system<|end_header_id|>\\n\\n`` are ids 0-4, the
  ``<image>`` token is id 5, the prompt starts at id 103.
* **Expansion** (``expand_image_tokens``): ``<image>`` becomes N image ids at positions ``[5, 581)``; 359 + 575
  = 934 positions. The LLM mask is ``expanded id != pad_token_id`` of the *LLaVA config* (not the tokenizer
  mask), the position ids ``cumsum(mask) - 1`` with 1 where the mask is 0.
* **LLaVA**: CLIP hidden state -2 without CLS, projected, scattered in order into the image positions
  (``scatter_image_features``, transformers 5's ``masked_scatter``); the Llama states ``hidden_states[-3]``
  (output of decoder layer 30 of 32, no final norm).
* **Output** (``output_rows``), image rows first, then text rows:

  - image: positions ``[5, 581)`` every ``interleave``-th one (all of them unless ``0 < interleave < 6``),
    mask 1: 288 rows for ``interleave = 2``, 144 for 4;
  - text: tokens ``[103, a - 4)`` and ``[a, 359)`` (at positions + 575), mask = the tokenizer mask of those
    tokens, where ``a`` is one past the last ``<|end_header_id|>`` (the assistant header): the 4 tokens
    ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>`` after the prompt are dropped, the ``\\n\\n``
    after them is kept. Always ``359 - 4 - 103 = 252`` rows (the prompt, ``\\n\\n``, then pads).

  ``L = 288 + 252 = 540`` (``interleave = 2``: ``image_condition_type="latent_concat"``, the 33-channel
  HunyuanVideo-I2V-33ch) or ``L = 144 + 252 = 396`` (``interleave = 4``: ``"token_replace"``, the 16-channel
  HunyuanVideo-I2V with embedded guidance, hcjax's ``hunyuan-video-i2v`` preset). See ``INTERLEAVE``.
* **Truncation**: when the prompt is so long that the assistant's ``<|end_header_id|>`` is cut away (only 2
  left), ``a`` is taken as 359 (diffusers' special case), so the text rows are tokens ``[103, 355)``: the last
  4 ids of the truncated sequence are dropped. diffusers applies this only at batch size 1 (at larger batches
  a truncated prompt makes it fail, or mis-crop when all are truncated); here every sample is treated as
  diffusers treats it alone, which for untruncated batches is diffusers' batched result.
* **Image** (``preprocess_image``): ``CLIPImageProcessor`` of llava-llama-3-8b (shortest side to 336 Pillow
  bicubic, centre crop 336, ``* 1/255`` in float64, CLIP mean / std in float32), bit-identical to transformers'
  Pillow backend (what it uses without torchvision). With torchvision installed transformers 5 picks its
  torchvision backend instead (uint8 antialiased bicubic, fused rescale / normalise): measured with
  torchvision 0.28 on 720 x 1280 and 200 x 150 images, 0.3-0.8 % of the values differ by one uint8 level
  (0.015 normalised), the rest by float32 rounding (< 3e-7); a 336 x 336 image only by the rounding.
* **Negative branch** (true CFG) in diffusers: the negative prompt with a black image of the video size
  (``black_image``; the resize makes its size irrelevant) and, a diffusers quirk, the *default* interleave 2
  whatever the model (``encode_prompt`` is called without ``image_embed_interleave`` there).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.models.text.clip import CLIPVisionConfig, CLIPVisionModel
from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
from hcjax.models.text.llava import IMAGE_SIZE as LLAVA_SIZE
from hcjax.models.text.llava import IMAGE_TOKEN, LlavaProjector, llava_image_features
from hcjax.models.text.templates import MAX_TEXT
from hcjax.pipelines.text_encoding import SKIP_LAYERS

END_HEADER = "<|end_header_id|>"
ASSISTANT_TOKENS = 4          # <|eot_id|> <|start_header_id|> assistant <|end_header_id|>
# transformers' OPENAI_CLIP_MEAN / STD (llava-llama-3-8b's preprocessor config), and its rescale factor. Not
# custom_text's: hymm_sp's Normalize writes the blue mean as 0.4082107, a different float32.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE = 1 / 255
# diffusers' default image_embed_interleave per transformer ``image_condition_type`` (others: 1)
INTERLEAVE = {"latent_concat": 2, "token_replace": 4}


@dataclasses.dataclass(frozen=True)
class I2VTemplate:
    """The I2V prompt template: ``text`` with one ``<image>`` and one ``{}``; ``crop`` template ids (BOS
    included) before the prompt; the ``<image>`` id's expansion ``[image_emb_start, image_emb_end)`` of
    ``image_emb_len`` positions."""

    text: str
    crop: int = 103
    image_emb_start: int = 5
    image_emb_end: int = 581
    image_emb_len: int = 576
    max_text: int = MAX_TEXT

    def format(self, prompt: str) -> str:
        return self.text.format(prompt)

    @property
    def max_length(self) -> int:
        return self.max_text + self.crop

    def with_image_len(self, n: int) -> I2VTemplate:
        """The same template for a vision tower with ``n`` features."""
        return dataclasses.replace(self, image_emb_len=n, image_emb_end=self.image_emb_start + n)

    def problems(self) -> list[str]:
        out = []
        if self.text.count(IMAGE_TOKEN) != 1 or self.text.count("{}") != 1:
            out.append(f"the template needs exactly one {IMAGE_TOKEN} and one '{{}}'")
        if self.crop <= 0 or self.max_text < ASSISTANT_TOKENS:
            out.append(f"crop {self.crop} must be positive and max_text {self.max_text} at least 4")
        if self.image_emb_end - self.image_emb_start != self.image_emb_len or self.image_emb_start < 0:
            out.append(f"image positions [{self.image_emb_start}, {self.image_emb_end}) do not hold "
                       f"image_emb_len {self.image_emb_len}")
        return out


I2V = I2VTemplate(
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: 1. The main content and theme of the video.2. The color, shape, size, "
    "texture, quantity, text, and spatial relationships of the objects.3. Actions, events, behaviors temporal "
    "relationships, physical movement changes of the objects.4. background environment, light, style and "
    "atmosphere.5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


class I2VText(NamedTuple):
    states: np.ndarray   # [B, N / k + 252, D] float32: image rows, then text rows
    mask: np.ndarray     # [B, N / k + 252] int32


def interleave_for(image_condition_type: str) -> int:
    """diffusers' ``image_embed_interleave`` default for a transformer's ``image_condition_type``."""
    return INTERLEAVE.get(image_condition_type, 1)


# --------------------------------------------------------------------------------------------- image


def _rgb_uint8(image) -> np.ndarray:
    """``uint8 [H, W, 3]`` of a PIL image (alpha composited on white, as transformers' ``convert_to_rgb``) or
    of an RGB uint8 array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a PIL image or an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
    return image


def resize_shape(height: int, width: int, size: int = LLAVA_SIZE) -> tuple[int, int]:
    """``(h, w)`` with the shorter side ``size`` and the longer ``int(size * long / short)``."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_image(image, size: int = LLAVA_SIZE, mean: Sequence[float] = CLIP_MEAN,
                     std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """``CLIPImageProcessor`` (Pillow backend) in channels-last: float32 ``[size, size, 3]``."""
    from PIL import Image

    rgb = _rgb_uint8(image)
    h, w = resize_shape(*rgb.shape[:2], size)
    resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))
    top, left = (h - size) // 2, (w - size) // 2
    crop = resized[top:top + size, left:left + size]
    scaled = (crop.astype(np.float64) * RESCALE).astype(np.float32)
    return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def black_image(height: int, width: int) -> np.ndarray:
    """The negative branch's image in diffusers: black, uint8 ``[height, width, 3]``."""
    return np.zeros((height, width, 3), np.uint8)


def image_batch(images, batch: int, size: int) -> np.ndarray:
    """float32 ``[batch, size, size, 3]``: one image (PIL / uint8 ``[H, W, 3]``) for every prompt, or a list /
    array of ``batch`` of them; a float array ``[batch, size, size, 3]`` is taken as preprocessed pixels."""
    if isinstance(images, np.ndarray | jax.Array) and images.ndim == 4 and images.dtype != np.uint8:
        if images.shape != (batch, size, size, 3):
            raise ValueError(f"pixel values must be [{batch}, {size}, {size}, 3], got {images.shape}")
        return np.asarray(images, np.float32)
    if not isinstance(images, list | tuple) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        images = [images] * batch
    if len(images) != batch:
        raise ValueError(f"{batch} prompts but {len(images)} images (give one image, or one per prompt)")
    return np.stack([preprocess_image(im, size) for im in images])


# --------------------------------------------------------------------------------------------- tokens


def tokenize_i2v(tokenizer, prompts: Sequence[str], template: I2VTemplate = I2V) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``[B, 256 + crop]`` of the templated prompts (the tokenizer's
    padding side, right for Llama-3; truncation)."""
    tokens = tokenizer([template.format(p) for p in prompts], max_length=template.max_length,
                       padding="max_length", truncation=True, return_tensors="np")
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)


def assistant_starts(ids: np.ndarray, end_header_id: int) -> np.ndarray:
    """``a`` per sample: one past the last ``<|end_header_id|>``, or ``L`` when only 2 are left (the
    assistant header truncated away; diffusers' batch-1 rule)."""
    starts = []
    for i, row in enumerate(np.asarray(ids)):
        found = np.flatnonzero(row == end_header_id)
        if len(found) < 2:
            raise ValueError(f"prompt {i}: {len(found)} {END_HEADER} tokens, the template needs the system and "
                             "user headers (max length too small?)")
        starts.append(row.shape[0] if len(found) == 2 else found[-1] + 1)
    return np.asarray(starts, np.int64)


def check_tokens(ids: np.ndarray, image_token_id: int, template: I2VTemplate) -> None:
    """Every sample holds exactly one image token, at ``template.image_emb_start``."""
    ids = np.asarray(ids)
    counts = (ids == image_token_id).sum(axis=1)
    at_start = ids[:, template.image_emb_start] == image_token_id if ids.shape[1] > template.image_emb_start \
        else np.zeros(ids.shape[0], bool)
    if (counts != 1).any() or not at_start.all():
        raise ValueError(f"each prompt needs one {IMAGE_TOKEN} token ({image_token_id}) at position "
                         f"{template.image_emb_start}; counts {counts.tolist()} (left padding, a prompt holding "
                         f"{IMAGE_TOKEN}, or a template truncated away?)")


def expand_image_tokens(ids: np.ndarray, image_token_id: int, pad_token_id: int, template: I2VTemplate
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """diffusers' ``_expand_input_ids_with_image_tokens`` for one image token at ``image_emb_start``:
    ``(ids, mask, position_ids)`` int32 ``[B, L + N - 1]``. Mask = id differs from the LLaVA config's
    ``pad_token_id``; position ids ``cumsum(mask) - 1``, 1 where the mask is 0."""
    check_tokens(ids, image_token_id, template)
    ids = np.asarray(ids, np.int32)
    s = template.image_emb_start
    image = np.full((ids.shape[0], template.image_emb_len), image_token_id, np.int32)
    expanded = np.concatenate([ids[:, :s], image, ids[:, s + 1:]], axis=1)
    mask = (expanded != pad_token_id).astype(np.int32)
    position_ids = np.where(mask == 0, 1, np.cumsum(mask, axis=1) - 1).astype(np.int32)
    return expanded, mask, position_ids


def output_rows(starts: np.ndarray, length: int, template: I2VTemplate, interleave: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(state_rows [B, R], text_tokens [B, R - I])``: the expanded positions read out (``I`` image rows,
    then the text rows) and the token indices of the text rows, for assistant starts ``starts`` and ``length``
    tokens. Raises if the samples' text parts differ in length (``<|end_header_id|>`` inside a prompt)."""
    t = template
    image = np.arange(t.image_emb_start, t.image_emb_end)
    if 0 < interleave < 6:
        image = image[::interleave]
    texts = [np.concatenate([np.arange(t.crop, max(t.crop, a - ASSISTANT_TOKENS)), np.arange(a, length)])
             for a in np.asarray(starts)]
    if len({len(x) for x in texts}) > 1:
        raise ValueError(f"the prompts' text parts differ in length ({[len(x) for x in texts]}): a prompt holds "
                         f"{END_HEADER}")
    text = np.stack(texts)
    rows = np.concatenate([np.broadcast_to(image, (text.shape[0], image.size)), text + t.image_emb_len - 1], axis=1)
    return rows.astype(np.int32), text


# --------------------------------------------------------------------------------------------- the models


def scatter_image_features(ids: jax.Array, token_embeds: jax.Array, features: jax.Array, image_token_id: int
                           ) -> jax.Array:
    """transformers 5 LLaVA's merge: the ``k``-th image-token position of a sample gets its ``k``-th feature
    (``masked_scatter``; every sample must hold ``N`` image tokens). ``ids [B, L]``, ``token_embeds
    [B, L, D]``, ``features [B, N, D]`` -> ``[B, L, D]`` in ``token_embeds``' dtype. Jittable."""
    is_image = ids == image_token_id
    k = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, features.shape[1] - 1)
    picked = jnp.take_along_axis(features.astype(token_embeds.dtype), k[..., None], axis=1)
    return jnp.where(is_image[..., None], picked, token_embeds)


@functools.partial(jax.jit, static_argnames=("cfg", "projector", "stop"))
def _image_features(cfg: CLIPVisionConfig, params, projector: LlavaProjector, projector_params, pixels, stop: int):
    states, _ = CLIPVisionModel(cfg).apply({"params": params}, pixels, stop=stop)
    return llava_image_features(states, projector_params, projector, feature_layer=-1)


@functools.partial(jax.jit, static_argnames=("cfg", "image_token_id"))
def _llm_rows(cfg: LlamaConfig, params, ids, mask, position_ids, features, rows, image_token_id: int):
    token_embeds = jnp.take(params["embed_tokens"]["embedding"], ids, axis=0)
    embeds = scatter_image_features(ids, token_embeds, features, image_token_id)
    hidden = LlamaEncoder(cfg).apply({"params": params}, None, mask, position_ids=position_ids,
                                     inputs_embeds=embeds, output_layer=cfg.num_layers - SKIP_LAYERS)
    return jnp.take_along_axis(hidden, rows[..., None], axis=1)


def encode_i2v_text(llm_cfg: LlamaConfig, llm_params: Any, vision_cfg: CLIPVisionConfig, vision_params: Any,
                    projector: LlavaProjector, projector_params: Any, tokenizer, prompts: str | Sequence[str],
                    images, image_token_id: int, pad_token_id: int, interleave: int = INTERLEAVE["token_replace"],
                    template: I2VTemplate = I2V, feature_layer: int = -2) -> I2VText:
    """HunyuanVideo-I2V's LLaVA encoding of ``prompts`` with reference ``images`` (module doc).

    ``images``: one image for all prompts or one per prompt (PIL or RGB uint8 ``[H, W, 3]``; preprocessed to
    the tower's size), or float32 pixel values ``[B, S, S, 3]``. ``image_token_id`` / ``pad_token_id``: the
    LLaVA config's ``image_token_index`` / ``pad_token_id``. ``interleave``: ``interleave_for(image_condition_type)``
    (4 for hcjax's token-replace I2V; 2 for diffusers' negative branch). ``feature_layer``: the config's
    ``vision_feature_layer`` (default strategy: CLS dropped). Returns ``I2VText(states [B, N/k + 252, D] float32,
    mask int32)``; all checks run before the models."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    n_layers = vision_cfg.num_layers
    problems = template.problems()
    if not prompts:
        problems.append("no prompts")
    if template.image_emb_len != vision_cfg.num_patches:
        problems.append(f"image_emb_len {template.image_emb_len} is not the vision tower's {vision_cfg.num_patches} "
                        "features (template.with_image_len)")
    if not -n_layers - 1 <= feature_layer < 0:
        problems.append(f"feature_layer {feature_layer} must be negative, at least {-n_layers - 1}")
    if problems:
        raise ValueError("cannot encode the I2V prompt: " + "; ".join(problems))
    pixels = image_batch(images, len(prompts), vision_cfg.image_size)
    ids, tok_mask = tokenize_i2v(tokenizer, prompts, template)
    expanded, mask, position_ids = expand_image_tokens(ids, image_token_id, pad_token_id, template)
    starts = assistant_starts(ids, tokenizer.convert_tokens_to_ids(END_HEADER))
    rows, text = output_rows(starts, ids.shape[1], template, interleave)
    features = _image_features(vision_cfg, vision_params, projector, projector_params, pixels,
                               n_layers + 1 + feature_layer)
    states = _llm_rows(llm_cfg, llm_params, expanded, mask, position_ids, features, rows, image_token_id)
    n_image = rows.shape[1] - text.shape[1]
    text_mask = np.take_along_axis(tok_mask, text, axis=1)
    out_mask = np.concatenate([np.ones((len(prompts), n_image), np.int32), text_mask], axis=1)
    return I2VText(np.asarray(states, np.float32), out_mask)


def i2v_embeddings(encoders: Any, image_path: Any, prompts: Sequence[str], image,
                   interleave: int = INTERLEAVE["token_replace"]) -> Any:
    """``TextEmbeddings`` of an I2V prompt: LLaVA states with the image (``encode_i2v_text``) and CLIP-L's pooled
    vector of the prompt alone. ``encoders``: a ``pipelines.text_encoding.TextEncoders``; ``image_path``: the
    model directory's ``convert.llava.LlavaImagePath``. For diffusers' negative branch pass ``black_image(h, w)``
    and ``interleave=2``."""
    from hcjax.pipelines.text_inputs import TextEmbeddings

    if image_path.select_strategy != "default" or len(image_path.feature_layers) != 1:
        raise ValueError("the I2V text path takes one vision feature layer without CLS (strategy 'default')")
    pad = -1 if image_path.config_pad_token_id is None else image_path.config_pad_token_id
    out = encode_i2v_text(encoders.llm_cfg, encoders.llm_params, image_path.vision_cfg, image_path.vision_params,
                          image_path.projector, image_path.projector_params, encoders.llm_tokenizer, list(prompts),
                          image, image_path.image_token_index, pad, interleave,
                          I2V.with_image_len(image_path.vision_cfg.num_patches), image_path.feature_layers[0])
    return TextEmbeddings(out.states, out.mask, encoders.pooled(list(prompts)))
