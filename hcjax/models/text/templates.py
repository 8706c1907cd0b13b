"""HunyuanVideo's MLLM prompt templates and their tokenisation (reference section 4.1).

The prompt is wrapped in a system + user template, tokenised (BOS added by the tokenizer) to ``256 + crop``
tokens with right padding and truncation; after the encoder, the first ``crop`` positions (the template
prefix) are dropped from the states and the mask, leaving ``[B, 256]``: the prompt tokens and the closing
``<|eot_id|>`` valid. The image template is used for 1-frame samples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_TEXT = 256
_HEADER = "<|start_header_id|>system<|end_header_id|>\n\n"
_USER = "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    text: str     # with one "{}" for the prompt
    crop: int     # template tokens (BOS included) dropped after the encoder

    def format(self, prompt: str) -> str:
        return self.text.format(prompt)

    @property
    def max_length(self) -> int:
        return MAX_TEXT + self.crop


VIDEO = PromptTemplate(
    _HEADER + "Describe the video by detailing the following aspects: 1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.3. Actions, "
    "events, behaviors temporal relationships, physical movement changes of the objects.4. background "
    "environment, light, style and atmosphere.5. camera angles, movements, and transitions used in the video:"
    + _USER, crop=95)
IMAGE = PromptTemplate(
    _HEADER + "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:" + _USER, crop=36)
DEFAULT_NEGATIVE = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
                    "bad teeth, bad eyes, bad limbs, distortion")
CLIP_LENGTH = 77


def for_frames(frames: int) -> PromptTemplate:
    """The video template, or the image template for a 1-frame sample."""
    return IMAGE if frames == 1 else VIDEO


def tokenize(tokenizer, prompts: list[str], template: PromptTemplate) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``[B, 256 + crop]`` of the templated prompts (a ``transformers``
    tokenizer with right padding)."""
    tokens = tokenizer([template.format(p.strip()) for p in prompts], max_length=template.max_length,
                       padding="max_length", truncation=True, return_tensors="np")
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)


def crop(states, mask, template: PromptTemplate):
    """Drops the template prefix: ``states [B, L, D] -> [B, L - crop, D]``, ``mask`` alike."""
    return states[:, template.crop:], mask[:, template.crop:]


def tokenize_clip(tokenizer, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-L tokens ``[B, 77]`` (no template, padded to the maximum, truncated)."""
    tokens = tokenizer([p.strip() for p in prompts], max_length=CLIP_LENGTH, padding="max_length", truncation=True,
                       return_tensors="np")
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)
