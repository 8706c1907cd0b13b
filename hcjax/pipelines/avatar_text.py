"""HunyuanVideo-Avatar's text conditioning (reference A.5): both CFG texts through LLaVA with the same character
image, as ``hymm_sp`` runs them.

* Positive: ``AVATAR_PREFIX + prompt`` (its data loader's prefix); negative: ``AVATAR_NEGATIVE`` (the 13-term
  ``neg_prompt`` of ``sample_inference_audio.py``) unless another is given.
* LLaVA: the HunyuanCustom encoding (``custom_text.encode_custom_text``: video template, ``"\\nThe person looks
  like<image>"`` appended, hidden state -3, the positional DiT mask ``[1 x k, 0 ..., 1 x (N - 1)]``) with the
  *resized* reference image stretched to the tower's size (``avatar_media.llava_pixels_stretched``: Pillow
  BILINEAR to 336 x 336, CLIP-normalised; passed as pixel values, so Custom's ``pad_image`` is not applied). The
  negative gets the same image and the same name, and its DiT mask is *not* cut (``text2tokens`` default name
  ``person``; unlike Custom's ``uncond_dit_mask``).
* CLIP-L: the pooled vector of each text (the positive with its prefix), no template, no image.
"""

from __future__ import annotations

import numpy as np

from hcjax.pipelines import custom_text as ct
from hcjax.pipelines.avatar_media import llava_pixels_stretched
from hcjax.pipelines.subject_text import SubjectTextEncoders
from hcjax.pipelines.text_inputs import TextEmbeddings

AVATAR_PREFIX = "Authentic, Realistic, Natural, High-quality, Lens-Fixed, "
AVATAR_NEGATIVE = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
                   "bad teeth, bad eyes, bad limbs, distortion, blurring, Lens changes")
AVATAR_NAME = "person"   # ``text2tokens``' default name: the release never passes another


def avatar_prompt(prompt: str) -> str:
    """The positive text the release encodes: the fixed quality prefix, then the caption."""
    return AVATAR_PREFIX + prompt


def encode_avatar_text(encoders: SubjectTextEncoders, prompt: str, negative: str | None,
                       reference_uint8: np.ndarray) -> tuple[TextEmbeddings, TextEmbeddings]:
    """``(positive, negative)`` embeddings: ``avatar_prompt(prompt)`` and ``negative`` (None: ``AVATAR_NEGATIVE``),
    each through LLaVA with ``reference_uint8`` (the resized reference, RGB uint8 ``[H, W, 3]``) and the positional
    DiT mask, plus CLIP-L's pooled vector of the same text. Raises ``ValueError`` when a text is so long that
    truncation drops the image token."""
    e, p = encoders.encoders, encoders.image_path
    pixels = llava_pixels_stretched(reference_uint8, p.vision_cfg.image_size)[None]   # [1, S, S, 3] float32

    def one(text: str) -> TextEmbeddings:
        out = ct.encode_custom_text(e.llm_cfg, e.llm_params, p.vision_cfg, p.vision_params, p.projector,
                                    p.projector_params, e.llm_tokenizer, [text], pixels, [AVATAR_NAME],
                                    p.image_token_index, p.config_pad_token_id)
        return TextEmbeddings(out.states, out.mask, e.pooled([text]))

    return one(avatar_prompt(prompt)), one(AVATAR_NEGATIVE if negative is None else negative)


__all__ = ["AVATAR_NAME", "AVATAR_NEGATIVE", "AVATAR_PREFIX", "avatar_prompt", "encode_avatar_text"]
