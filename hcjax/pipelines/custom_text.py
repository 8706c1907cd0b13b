"""HunyuanCustom's LLaVA text conditioning (reference section 4.3): the prompt in the video template with the
subject image appended, through the full LLaVA (vision tower + projector + Llama), as transformers 4.41.2 ran it.

* Text: ``image_appended_text`` = the video template (crop 95) filled with the prompt (not stripped, as
  ``hymm_sp``), then ``"\\nThe {name} looks like<image>"`` (no ``<SEP>`` token). Tokenised right padded /
  truncated to ``256 + 95 = 351``; the ``<image>`` token is the last valid one.
* Image: ``pad_image`` (aspect-preserving resize, centred on white) to 336 x 336, CLIP-normalised; 576 features
  (CLIP layer -2 without CLS, projected) replace ``<image>`` in place (``legacy_merge``): 351 + 575 = 926
  positions; ``hidden_states[-3]`` (no final norm), the first 95 dropped -> ``[B, 831, D]``.
* DiT mask: *not* the merged mask but ``concat(tokenizer_mask, ones(575))[95:]`` (``dit_text_mask``).
* Unconditional branch (CFG): the negative prompt with a **white** image (``white_image``) and, in the
  released code, the *default* subject name ``"person"`` (``UNCOND_NAME``; ``text2tokens`` is called without
  ``name``), then its DiT mask cut to ``[1 x (sum - 575), 0 ...]`` (``uncond_dit_mask``).

Beyond the released code, from the paper (section 3.2 / multi-subject): several subjects (one identity suffix
and one image per subject, each ``<image>`` replaced by its 576 features, ``dit_text_mask`` extended by
``M x 575`` ones), the ``<SEP>`` separator between prompt and identity prompt (``separator``), and the
image-embedded template (``style="embedded"``: the subject word in the prompt becomes ``<image>``). No released
checkpoint was trained on these; they are there for fine-tuning.

``encode_custom_text`` returns the states and the DiT mask; the pooled CLIP-L vector of the prompt (section 4.2)
is computed separately. The official code only works with a batch of 1 (it concatenates the ``[B, 351]`` mask
with a ``[1, 575]`` one); batches here are that computation per sample.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.models.text import templates
from hcjax.models.text.clip import CLIPVisionConfig, CLIPVisionModel
from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
from hcjax.models.text.llava import IMAGE_SIZE as LLAVA_SIZE
from hcjax.models.text.llava import (IMAGE_TOKEN, LlavaProjector, check_merge_inputs, legacy_merge,
                                     llava_image_features)
from hcjax.pipelines.text_encoding import SKIP_LAYERS

IMAGE_FEATURES = 576                    # 24 x 24 CLIP ViT-L/14 patches at 336 px
SUFFIX = "\nThe %s looks like" + IMAGE_TOKEN
DEFAULT_NAME = "object"                 # ``item_prompt`` default of hymm_sp's dataset
UNCOND_NAME = "person"                  # ``text2tokens``' default name, used for the negative prompt
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.4082107], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


class CustomText(NamedTuple):
    states: np.ndarray   # [B, 256 + M (N - 1), D] float32 (831 rows for one image of N = 576 features)
    mask: np.ndarray     # [B, 256 + M (N - 1)] int32, the DiT mask (dit_text_mask)


Names = str | Sequence[str]


def _as_names(names: Names) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def image_appended_text(prompt: str, names: Names = DEFAULT_NAME, template=templates.VIDEO,
                        separator: str = "") -> str:
    """The released image-appended template: the templated prompt, then ``separator`` (empty in the released
    code; the paper puts a ``<SEP>`` token there), then ``"\nThe {name} looks like<image>"`` per subject (in the
    order of the images; the paper's multi-subject rule: one identity prompt per image)."""
    return template.format(prompt) + separator + "".join(SUFFIX % n for n in _as_names(names))


def image_embedded_text(prompt: str, names: Names, template=templates.VIDEO) -> str:
    """The paper's image-embedded template (not in the released code): the first whole-word occurrence of each
    subject's description word in the prompt is replaced by ``<image>`` ("A man is playing guitar" with "man" ->
    "A <image> is playing guitar"). The images pair with the ``<image>`` tokens in the order they appear."""
    for name in _as_names(names):
        found = re.search(rf"\b{re.escape(name)}\b", prompt)
        if found is None:
            raise ValueError(f"the image-embedded template needs the subject word {name!r} in the prompt "
                             f"{prompt!r}; reword the prompt or use the image-appended template")
        prompt = prompt[:found.start()] + IMAGE_TOKEN + prompt[found.end():]
    return template.format(prompt)


def custom_texts(prompts: Sequence[str], names: Sequence[Names], template=templates.VIDEO,
                 style: str = "appended", separator: str = "") -> list[str]:
    """The LLaVA input texts of a batch: ``style`` "appended" (released) or "embedded" (paper)."""
    if len(prompts) != len(names):
        raise ValueError(f"{len(prompts)} prompts but {len(names)} names")
    if style == "appended":
        return [image_appended_text(p, n, template, separator) for p, n in zip(prompts, names)]
    if style == "embedded":
        if separator:
            raise ValueError("a separator applies to the image-appended template only")
        return [image_embedded_text(p, n, template) for p, n in zip(prompts, names)]
    raise ValueError(f"unknown template style {style!r}; use 'appended' or 'embedded'")


def tokenize_custom(tokenizer, prompts: Sequence[str], names: Sequence[Names], template=templates.VIDEO,
                    style: str = "appended", separator: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``[B, 256 + crop]`` of the texts with their image tokens (right
    padding, truncation: a prompt too long loses its ``<image>`` tokens, which ``legacy_merge`` reports)."""
    tokens = tokenizer(custom_texts(prompts, names, template, style, separator), max_length=template.max_length,
                       padding="max_length", truncation=True, return_tensors="np")
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)


def pad_image(image: np.ndarray, size: int | tuple[int, int] = LLAVA_SIZE) -> np.ndarray:
    """hymm_sp's ``pad_image``: ``uint8 [H, W, 3]`` -> ``uint8 [size, size, 3]`` (or ``[height, width, 3]`` for
    ``size = (height, width)``: the reference image padded to the video size).

    The image is resized to fit (the side that limits takes the target length, the other
    ``int(other / side * target)``, truncated, with the same float expression as the reference, so e.g.
    17 x 28 -> 203 x 336 at 336), then centred on white (255), the odd pixel of padding going right / bottom.

    Resampling: the reference uses ``cv2.resize`` (``INTER_LINEAR``); this uses Pillow ``BILINEAR`` (no OpenCV
    dependency). Both are half-pixel-centred bilinear when enlarging (cv2 rounds its weights to 11-bit fixed
    point, so values may differ by about 1 level), but when *shrinking* Pillow widens the filter (antialiased,
    every source pixel contributes) while cv2 ``INTER_LINEAR`` still interpolates between the 2 nearest source
    pixels (aliasing). Images larger than the target therefore give slightly different pixels here.
    Also: the reference reads files with ``cv2.imread`` (alpha *dropped*, not composited), pass RGB the same way.
    """
    from PIL import Image

    target_h, target_w = (size, size) if isinstance(size, int) else size
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if target_w / w > target_h / h:              # scale_w > scale_h: the height limits
        resize_h = int(target_h)
        resize_w = int(w / h * resize_h)
    else:
        resize_w = int(target_w)
        resize_h = int(h / w * resize_w)
    if (resize_h, resize_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((resize_w, resize_h), Image.BILINEAR))
    top, left = (target_h - resize_h) // 2, (target_w - resize_w) // 2
    out = np.full((target_h, target_w, 3), 255, np.uint8)
    out[top:top + resize_h, left:left + resize_w] = image
    return out


def normalize_clip(image: np.ndarray) -> np.ndarray:
    """``ToTensor`` + ``Normalize(CLIP mean, std)`` in float32, channels last: ``(x / 255 - mean) / std``."""
    return (np.asarray(image, np.uint8).astype(np.float32) / np.float32(255.0) - CLIP_MEAN) / CLIP_STD


def pad_image_336(image: np.ndarray) -> np.ndarray:
    """The LLaVA input of an RGB uint8 image: ``pad_image`` to 336 x 336, CLIP-normalised -> float32
    ``[336, 336, 3]``."""
    return normalize_clip(pad_image(image, LLAVA_SIZE))


def white_image(size: int = LLAVA_SIZE) -> np.ndarray:
    """The unconditional branch's LLaVA image: all 255 (``np.ones_like(image) * 255``), uint8."""
    return np.full((size, size, 3), 255, np.uint8)


def llava_pixels(images, size: int) -> np.ndarray:
    """``[B, M, size, size, 3]`` float32 pixel values of ``M`` subject images per sample.

    ``images``: per sample an RGB uint8 image ``[H, W, 3]`` or a list / tuple of ``M`` of them (a list, or a uint8
    ``[B, H, W, 3]`` array; each is padded and normalised), or float pixel values already prepared,
    ``[B, size, size, 3]`` or ``[B, M, size, size, 3]``."""
    if isinstance(images, np.ndarray | jax.Array) and images.dtype != np.uint8:
        pixels = np.asarray(images, np.float32)
        pixels = pixels[:, None] if pixels.ndim == 4 else pixels
        if pixels.ndim != 5 or pixels.shape[2:] != (size, size, 3):
            raise ValueError(f"pixel values must be [B, (M,) {size}, {size}, 3], got {images.shape}")
        return pixels
    per_sample = [list(im) if isinstance(im, list | tuple) else [im] for im in images]
    counts = {len(group) for group in per_sample}
    if len(counts) > 1:
        raise ValueError(f"every sample needs the same number of subject images, got {sorted(counts)}; batch "
                         "samples by subject count")
    return np.stack([np.stack([normalize_clip(pad_image(np.asarray(im), size)) for im in group])
                     for group in per_sample])


def dit_text_mask(tokenizer_mask, num_image_features: int = IMAGE_FEATURES, crop: int = templates.VIDEO.crop,
                  num_images: int = 1) -> np.ndarray:
    """The mask HunyuanCustom hands the DiT: ``concat(tokenizer_mask [B, 351], ones [B, M (N - 1)])[:, crop:]``
    = ``[1 x n, 0 x (256 - n), 1 x 575]`` -> ``[B, 831]`` for one image. It is *not* the merged mask: it is
    positionally misaligned with the states (image features at ``[n - 1, n + 575)``), see reference 4.3. For
    ``M`` images (not in the released code) the count of ones again equals the merged length."""
    mask = np.asarray(tokenizer_mask, np.int32)
    ones = np.ones((mask.shape[0], num_images * (num_image_features - 1)), np.int32)
    return np.concatenate([mask, ones], axis=1)[:, crop:]


def uncond_dit_mask(mask, num_image_features: int = IMAGE_FEATURES, num_images: int = 1) -> np.ndarray:
    """The pipeline's rewrite of the unconditional DiT mask: a row with ``sum > 575`` becomes
    ``[1 x (sum - 575), 0 x rest]`` (the negative text, its suffix and the first white-image feature); other rows
    are kept. The released code does this to ``prompt_mask[0]`` only (the first row of the ``[uncond, cond]``
    batch, the whole unconditional half at its batch size 1); here it is applied to every row given. For ``M``
    images ``M (N - 1)`` ones are taken off."""
    mask = np.asarray(mask, np.int32)
    extra = num_images * (num_image_features - 1)
    out = mask.copy()
    for i, total in enumerate(mask.sum(axis=1)):
        if total > extra:
            out[i] = (np.arange(mask.shape[1]) < total - extra).astype(np.int32)
    return out


@functools.partial(jax.jit, static_argnames=("cfg",))
def _vision_states(cfg: CLIPVisionConfig, params, pixels):
    states, _ = CLIPVisionModel(cfg).apply({"params": params}, pixels, stop=cfg.num_layers - 1)
    return states


@functools.partial(jax.jit, static_argnames=("cfg", "image_token_id", "pad_token_id", "config_pad_token_id"))
def _merged_llm(cfg: LlamaConfig, params, ids, mask, features, image_token_id, pad_token_id, config_pad_token_id):
    token_embeds = jnp.take(params["embed_tokens"]["embedding"], ids, axis=0)
    embeds, merged_mask, position_ids = legacy_merge(ids, mask, token_embeds, features, image_token_id,
                                                     pad_token_id, config_pad_token_id)
    return LlamaEncoder(cfg).apply({"params": params}, None, merged_mask, position_ids=position_ids,
                                   inputs_embeds=embeds, output_layer=cfg.num_layers - SKIP_LAYERS)


def encode_custom_text(llm_cfg: LlamaConfig, llm_params: Any, vision_cfg: CLIPVisionConfig, vision_params: Any,
                       projector: LlavaProjector, projector_params: Any, tokenizer, prompts: Sequence[str], images,
                       names: Sequence[Names], image_token_id: int, config_pad_token_id: int | None,
                       template=templates.VIDEO, style: str = "appended", separator: str = "") -> CustomText:
    """HunyuanCustom's LLaVA encoding of ``prompts`` with subject ``images`` named ``names``.

    ``images``: per prompt one RGB uint8 image or a list of ``M`` (several subjects; ``names[i]`` then lists
    ``M`` names), see ``llava_pixels``. ``style`` / ``separator``: the template (``custom_texts``).
    ``image_token_id`` / ``config_pad_token_id``: the LLaVA config's ``image_token_index`` / ``pad_token_id``
    (see ``legacy_merge`` for what the latter changes). Returns ``CustomText(states [B, 256 + M (N - 1), D]
    float32, DiT mask alike int32)`` (``[B, 831, 4096]`` at full size with one image). For the unconditional
    branch pass the negative prompts, ``white_image()`` (one per subject) and ``UNCOND_NAME``, then
    ``uncond_dit_mask`` on the mask."""
    ids, mask = tokenize_custom(tokenizer, prompts, names, template, style, separator)
    pixels = llava_pixels(images, vision_cfg.image_size)
    b, m = pixels.shape[:2]
    if b != ids.shape[0]:
        raise ValueError(f"{ids.shape[0]} prompts but {b} images")
    check_merge_inputs(ids, mask, image_token_id, tokenizer.pad_token_id, m)   # before the heavy work
    states = _vision_states(vision_cfg, vision_params, pixels.reshape(b * m, *pixels.shape[2:]))
    features = llava_image_features(states, projector_params, projector, feature_layer=-1)   # = layer -2
    features = features.reshape(b, m, *features.shape[1:])
    hidden = _merged_llm(llm_cfg, llm_params, ids, mask, features, image_token_id, tokenizer.pad_token_id,
                         config_pad_token_id)
    return CustomText(np.asarray(hidden[:, template.crop:], np.float32),
                      dit_text_mask(mask, features.shape[2], template.crop, m))
